//! `persistentVolumeClaim` pod volumes, as upstream's volume manager resolves them: the claim in
//! the pod's namespace must be Bound (`spec.volumeName`), its PersistentVolume must name it back
//! (`spec.claimRef`), be usable on this node (`spec.nodeAffinity`) and be a `local` or `hostPath`
//! volume (see docs/STORAGE.md). A Filesystem volume is its directory; a Block volume is the
//! device its path is (or links to). Every failure names the claim; the kubelet retries them (a
//! claim may yet be bound) and reports them as `FailedMount` events.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Node, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod,
};
use kube::Api;

use super::affinity::{self, NodeFacts};

/// Why a claim cannot be used by a pod on this node.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("error processing PVC {namespace}/{claim}: {problem}")]
pub struct ClaimError {
    /// The claim's namespace (the pod's).
    pub namespace: String,
    /// The claim's name.
    pub claim: String,
    /// What is wrong.
    pub problem: ClaimProblem,
}

/// What is wrong with a claim, its volume or their use.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ClaimProblem {
    /// No such claim.
    #[error("persistentvolumeclaim {0:?} not found")]
    NotFound(String),
    /// The claim is going away.
    #[error("the claim is being deleted")]
    Deleting,
    /// The claim has no volume yet.
    #[error("the claim is not bound (phase {phase:?}, spec.volumeName {volume:?})")]
    Unbound {
        /// `status.phase`.
        phase: String,
        /// `spec.volumeName`.
        volume: String,
    },
    /// The claim's volume does not exist.
    #[error("persistentvolume {0:?} not found")]
    PvNotFound(String),
    /// The volume is bound to another claim.
    #[error("persistentvolume {pv:?} is bound to {bound:?}, not to this claim")]
    BoundElsewhere {
        /// The PV.
        pv: String,
        /// `namespace/name` its `spec.claimRef` names.
        bound: String,
    },
    /// The API could not be read.
    #[error("reading {what} {name:?}: {message}")]
    Api {
        /// `persistentvolumeclaim`, `persistentvolume` or `node`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The API's message.
        message: String,
    },
    /// The volume's source is one this node cannot mount.
    #[error(
        "persistentvolume {pv:?} is a {kind} volume: this node mounts only local and hostPath persistent volumes"
    )]
    UnsupportedSource {
        /// The PV.
        pv: String,
        /// The source field, e.g. `nfs`, `csi` (empty: none).
        kind: String,
    },
    /// The volume lives on another node.
    #[error(
        "persistentvolume {pv:?} cannot be used on node {node:?}: its spec.nodeAffinity does not match the node"
    )]
    NodeAffinity {
        /// The PV.
        pv: String,
        /// This node.
        node: String,
    },
    /// The volume's path is not what its mode needs.
    #[error("persistentvolume {pv:?}: {path}: {problem}")]
    Path {
        /// The PV.
        pv: String,
        /// Its `local.path` or `hostPath.path`.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A Block volume in `volumeMounts`, or a Filesystem one in `volumeDevices` (upstream's
    /// message).
    #[error("volume {volume:?} has volumeMode {mode}, but is specified in {field}")]
    Mode {
        /// The pod's volume.
        volume: String,
        /// `Block` or `Filesystem`.
        mode: &'static str,
        /// `volumeMounts` or `volumeDevices`.
        field: &'static str,
    },
}

/// A resolved claim: what the containers get.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The directory (Filesystem) or the device node (Block, symlinks resolved: `/dev/loopN`).
    pub path: PathBuf,
    /// Block mode: the containers get it as a device, at `volumeDevices[].devicePath`.
    pub block: bool,
    /// The pod's volume says `readOnly`.
    pub read_only: bool,
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// This node's name and labels, for PersistentVolumes' node affinity.
pub async fn node_facts(client: &kube::Client, node: &str) -> Result<NodeFacts, ClaimProblem> {
    let api: Api<Node> = Api::all(client.clone());
    let n = api.get(node).await.map_err(|e| ClaimProblem::Api {
        what: "node",
        name: node.to_string(),
        message: api_message(&e),
    })?;
    Ok(NodeFacts {
        name: node.to_string(),
        labels: n.metadata.labels.unwrap_or_default(),
    })
}

/// The source field a PV uses (`local`, `nfs`, `csi`...): every spec field but these.
fn source_kind(pv: &PersistentVolume) -> String {
    const NOT_SOURCES: &[&str] = &[
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeMode",
        "volumeAttributesClassName",
    ];
    let spec = serde_json::to_value(pv.spec.clone().unwrap_or_default()).unwrap_or_default();
    spec.as_object()
        .and_then(|o| {
            o.keys()
                .find(|k| !NOT_SOURCES.contains(&k.as_str()))
                .cloned()
        })
        .unwrap_or_default()
}

/// The host path of `raw` for the volume's mode: a directory (Filesystem; `local` must be one)
/// or the block device it is or links to (Block).
fn host_path(pv: &str, raw: &str, block: bool, local: bool) -> Result<PathBuf, ClaimProblem> {
    let problem = |problem: String| ClaimProblem::Path {
        pv: pv.to_string(),
        path: raw.to_string(),
        problem,
    };
    let meta = std::fs::metadata(raw).map_err(|e| problem(format!("cannot be used ({e})")))?;
    if block {
        if !meta.file_type().is_block_device() {
            return Err(problem(
                "is not a block device (the volume's mode is Block)".into(),
            ));
        }
        return std::fs::canonicalize(raw)
            .map_err(|e| problem(format!("cannot be resolved ({e})")));
    }
    if local && !meta.is_dir() {
        return Err(problem(
            "is not a directory (the volume's mode is Filesystem)".into(),
        ));
    }
    Ok(PathBuf::from(raw))
}

/// Resolves the claim of `source` for a pod in `namespace` on `node` (its facts fetched on first
/// need and kept in `facts`).
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    source: &PersistentVolumeClaimVolumeSource,
    node: &str,
    facts: &mut Option<NodeFacts>,
) -> Result<Claimed, ClaimError> {
    let fail = |problem| ClaimError {
        namespace: namespace.to_string(),
        claim: source.claim_name.clone(),
        problem,
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = match claims.get(&source.claim_name).await {
        Ok(c) => c,
        Err(e) if not_found(&e) => {
            return Err(fail(ClaimProblem::NotFound(source.claim_name.clone())));
        }
        Err(e) => {
            return Err(fail(ClaimProblem::Api {
                what: "persistentvolumeclaim",
                name: source.claim_name.clone(),
                message: api_message(&e),
            }));
        }
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(fail(ClaimProblem::Deleting));
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let volume = spec.volume_name.clone().unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(fail(ClaimProblem::Unbound { phase, volume }));
    }
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = match pvs.get(&volume).await {
        Ok(pv) => pv,
        Err(e) if not_found(&e) => return Err(fail(ClaimProblem::PvNotFound(volume))),
        Err(e) => {
            return Err(fail(ClaimProblem::Api {
                what: "persistentvolume",
                name: volume,
                message: api_message(&e),
            }));
        }
    };
    let pv_spec = pv.spec.clone().unwrap_or_default();
    if let Some(r) = &pv_spec.claim_ref {
        let same_name = r.name.as_deref() == Some(source.claim_name.as_str())
            && r.namespace.as_deref().unwrap_or(namespace) == namespace;
        let same_uid = r.uid.is_none() || r.uid == claim.metadata.uid;
        if !same_name || !same_uid {
            return Err(fail(ClaimProblem::BoundElsewhere {
                pv: volume,
                bound: format!(
                    "{}/{}",
                    r.namespace.as_deref().unwrap_or_default(),
                    r.name.as_deref().unwrap_or_default()
                ),
            }));
        }
    }
    if let Some(required) = pv_spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
    {
        if facts.is_none() {
            *facts = Some(node_facts(client, node).await.map_err(fail)?);
        }
        let ok = facts
            .as_ref()
            .is_some_and(|f| affinity::matches(required, f));
        if !ok {
            return Err(fail(ClaimProblem::NodeAffinity {
                pv: volume,
                node: node.to_string(),
            }));
        }
    }
    let mode = pv_spec
        .volume_mode
        .clone()
        .or(spec.volume_mode.clone())
        .unwrap_or_default();
    let block = mode == "Block";
    let (raw, local) = match (&pv_spec.local, &pv_spec.host_path) {
        (Some(l), _) => (l.path.clone(), true),
        (None, Some(h)) => (h.path.clone(), false),
        (None, None) => {
            return Err(fail(ClaimProblem::UnsupportedSource {
                kind: source_kind(&pv),
                pv: volume,
            }));
        }
    };
    let path = host_path(&volume, &raw, block, local).map_err(fail)?;
    Ok(Claimed {
        path,
        block,
        read_only: source.read_only.unwrap_or(false),
    })
}

/// Upstream's check that a Block volume is only in `volumeDevices` and a Filesystem one only in
/// `volumeMounts`, over every container of the pod.
pub fn check_use(pod: &Pod, volume: &str, block: bool) -> Result<(), ClaimProblem> {
    let spec = pod.spec.as_ref();
    let containers = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.map(|s| &s.containers).into_iter().flatten());
    for c in containers {
        let mounted = c.volume_mounts.iter().flatten().any(|m| m.name == volume);
        let device = c.volume_devices.iter().flatten().any(|d| d.name == volume);
        let (mode, field) = match (block, mounted, device) {
            (true, true, _) => ("Block", "volumeMounts"),
            (false, _, true) => ("Filesystem", "volumeDevices"),
            _ => continue,
        };
        return Err(ClaimProblem::Mode {
            volume: volume.to_string(),
            mode,
            field,
        });
    }
    Ok(())
}

/// Whether a path is a block device (following symlinks).
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_name_the_claim() {
        let e = ClaimError {
            namespace: "ns".into(),
            claim: "x".into(),
            problem: ClaimProblem::NotFound("x".into()),
        };
        assert_eq!(
            e.to_string(),
            "error processing PVC ns/x: persistentvolumeclaim \"x\" not found"
        );
    }

    #[test]
    fn the_source_kind_is_the_spec_field() {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "nfs": {"server": "s", "path": "/"}, "storageClassName": "x"}
        }))
        .unwrap();
        assert_eq!(source_kind(&pv), "nfs");
    }

    #[test]
    fn paths_are_checked_against_the_mode() {
        let dir = kubevirt_testsupport::tempdir("claims-path");
        let d = dir.to_str().unwrap();
        assert_eq!(host_path("pv", d, false, true).unwrap(), dir.to_path_buf());
        let e = host_path("pv", d, true, true).unwrap_err().to_string();
        assert!(e.contains("is not a block device"), "{e}");
        let file = dir.join("f");
        std::fs::write(&file, b"").unwrap();
        let f = file.to_str().unwrap();
        assert!(host_path("pv", f, false, true).is_err());
        assert!(
            host_path("pv", f, false, false).is_ok(),
            "hostPath may be a file"
        );
        let gone = dir.join("gone");
        let e = host_path("pv", gone.to_str().unwrap(), false, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be used"), "{e}");
    }

    #[test]
    fn block_in_mounts_and_filesystem_in_devices_are_refused() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "volumeMounts": [{"name": "fs", "mountPath": "/d"}]},
                {"name": "b", "volumeDevices": [{"name": "blk", "devicePath": "/dev/x"}]}
            ]}
        }))
        .unwrap();
        assert!(check_use(&pod, "fs", false).is_ok());
        assert!(check_use(&pod, "blk", true).is_ok());
        assert_eq!(
            check_use(&pod, "fs", true).unwrap_err().to_string(),
            "volume \"fs\" has volumeMode Block, but is specified in volumeMounts"
        );
        assert_eq!(
            check_use(&pod, "blk", false).unwrap_err().to_string(),
            "volume \"blk\" has volumeMode Filesystem, but is specified in volumeDevices"
        );
    }
}
