//! A pod's volumes on the host: `emptyDir` (a directory under the pod's directory), `hostPath`
//! (the path itself), `configMap` and `secret` (their keys written as files, mounted read-only),
//! `persistentVolumeClaim` (the directory or block device of the claim's local volume, see
//! [`super::claims`]). Any other volume type is refused with the field that names it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::Api;

use super::affinity::NodeFacts;
use super::claims::{self, ClaimError};

/// Why a pod's volumes cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume type is not supported here.
    #[error(
        "{field}: unsupported volume type (this node supports emptyDir, hostPath, configMap, secret and persistentVolumeClaim)"
    )]
    Unsupported {
        /// `spec.volumes[i]`.
        field: String,
    },
    /// A referenced ConfigMap or Secret is missing or unreadable.
    #[error("{field}: {what} {name:?}: {source}")]
    Source {
        /// `spec.volumes[i].configMap`.
        field: String,
        /// `configmap` or `secret`.
        what: &'static str,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: Box<kube::Error>,
    },
    /// A claim cannot be used (yet): missing, unbound, or its volume is not usable here.
    #[error("{field} ({volume}): {source}")]
    Claim {
        /// `spec.volumes[i]`.
        field: String,
        /// The pod's volume.
        volume: String,
        /// Why.
        #[source]
        source: Box<ClaimError>,
    },
    /// A key or path is not a relative path inside the volume.
    #[error("{field}: {path:?} must be a relative path without '..'")]
    BadPath {
        /// The field.
        field: String,
        /// The path.
        path: String,
    },
    /// A file or directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl VolumeError {
    /// Whether retrying later may help (a missing ConfigMap may appear, a claim be bound).
    pub fn transient(&self) -> bool {
        matches!(
            self,
            VolumeError::Source { .. } | VolumeError::Io { .. } | VolumeError::Claim { .. }
        )
    }

    /// The message of the `FailedMount` event upstream's kubelet records for this failure, if
    /// it records one.
    pub fn failed_mount(&self) -> Option<String> {
        let VolumeError::Claim { volume, source, .. } = self else {
            return None;
        };
        Some(format!(
            "Unable to attach or mount volumes: unmounted volumes=[{volume}]: {source}"
        ))
    }
}

/// A prepared volume: where it is on the host and whether it must be mounted read-only.
#[derive(Debug, Clone)]
pub struct HostVolume {
    /// The host path.
    pub path: PathBuf,
    /// configMap and secret volumes are always read-only.
    pub read_only: bool,
    /// A Block claim: `path` is a device node, given to containers by `volumeDevices`.
    pub block: bool,
}

impl HostVolume {
    fn dir(path: PathBuf, read_only: bool) -> Self {
        HostVolume {
            path,
            read_only,
            block: false,
        }
    }
}

/// The first unsupported volume, if any: checked before anything runs.
pub fn check(pod: &Pod) -> Result<(), VolumeError> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (i, v) in volumes.into_iter().flatten().enumerate() {
        if v.empty_dir.is_none()
            && v.host_path.is_none()
            && v.config_map.is_none()
            && v.secret.is_none()
            && v.persistent_volume_claim.is_none()
        {
            return Err(VolumeError::Unsupported {
                field: format!("spec.volumes[{i}] ({})", v.name),
            });
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn safe_rel(field: &str, p: &str) -> Result<(), VolumeError> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || Path::new(p)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if bad {
        return Err(VolumeError::BadPath {
            field: field.to_string(),
            path: p.to_string(),
        });
    }
    Ok(())
}

fn write_files(
    dir: &Path,
    field: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: i32,
) -> Result<(), VolumeError> {
    let tmp = dir.with_extension("new");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let files: Vec<(String, &Vec<u8>, i32)> = match items {
        Some(items) => items
            .iter()
            .filter_map(|it| {
                data.get(&it.key)
                    .map(|v| (it.path.clone(), v, it.mode.unwrap_or(mode)))
            })
            .collect(),
        None => data.iter().map(|(k, v)| (k.clone(), v, mode)).collect(),
    };
    for (rel, bytes, mode) in files {
        safe_rel(field, &rel)?;
        let path = tmp.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode as u32 & 0o777))
            .map_err(io(&path))?;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(io(dir))
}

/// Where a pod's volumes are prepared.
struct Target<'a> {
    client: &'a kube::Client,
    pod: &'a Pod,
    ns: &'a str,
    dir: &'a Path,
    node: &'a str,
    facts: Option<NodeFacts>,
}

async fn prepare_one(t: &mut Target<'_>, i: usize, v: &Volume) -> Result<HostVolume, VolumeError> {
    let (client, ns, dir) = (t.client, t.ns, t.dir);
    let field = format!("spec.volumes[{i}]");
    if let Some(source) = &v.persistent_volume_claim {
        let fail = |source| VolumeError::Claim {
            field: field.clone(),
            volume: v.name.clone(),
            source: Box::new(source),
        };
        let c = claims::resolve(client, ns, source, t.node, &mut t.facts)
            .await
            .map_err(fail)?;
        claims::check_use(t.pod, &v.name, c.block).map_err(|problem| {
            fail(ClaimError {
                namespace: ns.to_string(),
                claim: source.claim_name.clone(),
                problem,
            })
        })?;
        return Ok(HostVolume {
            path: c.path,
            read_only: c.read_only,
            block: c.block,
        });
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        if h.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
        return Ok(HostVolume::dir(path, false));
    }
    let path = dir.join(&v.name);
    if v.empty_dir.is_some() {
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        return Ok(HostVolume::dir(path, false));
    }
    if let Some(cm) = &v.config_map {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let name = cm.name.clone();
        let data = match api.get(&name).await {
            Ok(c) => {
                let mut d: BTreeMap<String, Vec<u8>> = c
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                d.extend(
                    c.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                d
            }
            Err(kube::Error::Api(e)) if e.code == 404 && cm.optional == Some(true) => {
                BTreeMap::new()
            }
            Err(source) => {
                return Err(VolumeError::Source {
                    field: format!("{field}.configMap"),
                    what: "configmap",
                    name,
                    source: Box::new(source),
                });
            }
        };
        write_files(
            &path,
            &field,
            &data,
            cm.items.as_ref(),
            cm.default_mode.unwrap_or(0o644),
        )?;
        return Ok(HostVolume::dir(path, true));
    }
    if let Some(s) = &v.secret {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let name = s.secret_name.clone().unwrap_or_default();
        let data = match api.get(&name).await {
            Ok(sec) => {
                let mut d: BTreeMap<String, Vec<u8>> = sec
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                d.extend(
                    sec.string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                d
            }
            Err(kube::Error::Api(e)) if e.code == 404 && s.optional == Some(true) => {
                BTreeMap::new()
            }
            Err(source) => {
                return Err(VolumeError::Source {
                    field: format!("{field}.secret"),
                    what: "secret",
                    name,
                    source: Box::new(source),
                });
            }
        };
        write_files(
            &path,
            &field,
            &data,
            s.items.as_ref(),
            s.default_mode.unwrap_or(0o644),
        )?;
        return Ok(HostVolume::dir(path, true));
    }
    Err(VolumeError::Unsupported { field })
}

/// Prepares every volume of `pod` under `dir` (the pod's volume directory) on node `node`.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
    node: &str,
) -> Result<BTreeMap<String, HostVolume>, VolumeError> {
    check(pod)?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut target = Target {
        client,
        pod,
        ns: &ns,
        dir,
        node,
        facts: None,
    };
    let mut out = BTreeMap::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (i, v) in volumes.into_iter().flatten().enumerate() {
        out.insert(v.name.clone(), prepare_one(&mut target, i, v).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_volume_names_the_field() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [
                {"name": "a", "emptyDir": {}},
                {"name": "b", "nfs": {"server": "x", "path": "/"}}
            ]}
        }))
        .unwrap();
        let e = check(&pod).unwrap_err().to_string();
        assert!(
            e.starts_with("spec.volumes[1] (b): unsupported volume type"),
            "{e}"
        );
    }

    #[test]
    fn files_stay_inside() {
        let dir = std::env::temp_dir().join(format!("kubelet-vol-{}", std::process::id()));
        let mut data = BTreeMap::new();
        data.insert("a".to_string(), b"1".to_vec());
        write_files(&dir, "f", &data, None, 0o644).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        let items: Vec<KeyToPath> =
            serde_json::from_value(serde_json::json!([{"key": "a", "path": "../x"}])).unwrap();
        assert!(write_files(&dir, "f", &data, Some(&items), 0o644).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        let _ = std::fs::remove_dir_all(dir.with_extension("new"));
    }
}
