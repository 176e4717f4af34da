//! The CSI snapshotter of `kubevirt-rs.io/local-volume` (the external-snapshotter sidecar and the
//! driver's `CreateSnapshot`/`DeleteSnapshot`, for one node's volumes). It serves the
//! VolumeSnapshotContents of our driver that this node holds: a dynamic one whose
//! `source.volumeHandle` is a PV of ours on this node, a pre-provisioned one whose
//! `source.snapshotHandle` is a snapshot in this node's root ([`super::snapshots`]).
//!
//! - A content not ready: the volume is copied into `<root>/snapshots/<content name>` and the
//!   status says `readyToUse`, `restoreSize` (the volume's capacity), `snapshotHandle` and
//!   `creationTime`; a failure is the status's `error`.
//! - A content with deletion policy Delete carries
//!   `snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection` while its snapshot
//!   exists; once the content is deleted, the snapshot's files go, then the finalizer.
//!
//! [`plan`] is pure; [`pass`] lists, plans and acts (the provisioner's process runs it).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use kubevirt_api::volumesnapshot::CONTENT_BOUND_PROTECTION;
use kubevirt_api::volumesnapshot::v1::{DeletionPolicy, VolumeSnapshotContent};
use serde_json::json;

use super::PROVISIONER;
use super::claim::VolumeMode;
use super::disk::{Volume, valid_name};
use super::plan::{Scope, is_ours, node_of};
use super::snapshots::{self, Meta};

/// What to do about one content.
#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotAction {
    /// Put the bound-protection finalizer on a Delete-policy content this node serves.
    Protect {
        /// The content.
        content: String,
    },
    /// Copy `volume` into the snapshot `handle`, then write the content's status.
    Take {
        /// The content (its name is the handle).
        content: String,
        /// The source volume with its capacity.
        volume: Volume,
    },
    /// Write the status of a snapshot that is on disk (taken before, or pre-provisioned).
    Report {
        /// The content.
        content: String,
        /// The snapshot's handle.
        handle: String,
        /// What the snapshot is.
        meta: Meta,
    },
    /// Say on the content's status why no snapshot can be taken.
    Fail {
        /// The content.
        content: String,
        /// Why.
        message: String,
    },
    /// A deleted content: remove its snapshot's files if the policy is Delete, then drop the
    /// finalizer.
    Release {
        /// The content.
        content: String,
        /// The handle whose files go (`None`: Retain, the files stay).
        delete: Option<String>,
    },
}

/// The actions for every content of our driver that this node serves.
pub fn plan(
    scope: &Scope,
    contents: &[VolumeSnapshotContent],
    volumes: &[PersistentVolume],
    on_disk: &BTreeMap<String, Meta>,
) -> Vec<SnapshotAction> {
    let mut actions = Vec::new();
    for c in contents.iter().filter(|c| c.spec.driver == PROVISIONER) {
        let name = c.name_any();
        let source = &c.spec.source;
        // Where this content's snapshot lives: dynamic ones on the node of their volume,
        // pre-provisioned ones wherever their files are.
        let volume = source
            .volume_handle
            .as_deref()
            .and_then(|h| volumes.iter().find(|v| v.name_any() == h));
        // A dynamic snapshot's handle is its content's name (before its status says so).
        let handle = c
            .snapshot_handle()
            .map(str::to_string)
            .or_else(|| source.volume_handle.is_some().then(|| name.clone()));
        let here = match (&source.volume_handle, volume) {
            (Some(_), Some(v)) => is_ours(v) && node_of(v) == Some(scope.node.as_str()),
            // A volume that is gone: the node that holds the snapshot still serves it.
            (Some(_), None) => handle.as_ref().is_some_and(|h| on_disk.contains_key(h)),
            (None, _) => handle.as_ref().is_some_and(|h| on_disk.contains_key(h)),
        };
        if !here {
            continue;
        }
        let finalized = c
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == CONTENT_BOUND_PROTECTION);
        if c.metadata.deletion_timestamp.is_some() {
            if finalized {
                let delete = (c.spec.deletion_policy == DeletionPolicy::Delete)
                    .then(|| handle.clone().unwrap_or_else(|| name.clone()));
                actions.push(SnapshotAction::Release {
                    content: name,
                    delete,
                });
            }
            continue;
        }
        if c.spec.deletion_policy == DeletionPolicy::Delete && !finalized {
            actions.push(SnapshotAction::Protect {
                content: name.clone(),
            });
        }
        let status = c.status.as_ref();
        let ready = c.is_ready();
        if let Some(h) = handle.as_ref().filter(|h| on_disk.contains_key(*h)) {
            if !ready || status.and_then(|s| s.restore_size).is_none() {
                actions.push(SnapshotAction::Report {
                    content: name,
                    handle: h.clone(),
                    meta: on_disk[h].clone(),
                });
            }
            continue;
        }
        if ready {
            continue;
        }
        match (source.volume_handle.as_deref(), volume) {
            (Some(_), Some(v)) => match volume_of(scope, v) {
                Ok(volume) => actions.push(SnapshotAction::Take {
                    content: name,
                    volume,
                }),
                Err(message) => actions.push(SnapshotAction::Fail {
                    content: name,
                    message,
                }),
            },
            (Some(h), None) => actions.push(SnapshotAction::Fail {
                content: name,
                message: format!("the source volume {h} (a PersistentVolume) does not exist"),
            }),
            (None, _) => {}
        }
    }
    actions
}

/// The volume behind our PV `v` on this node, with its capacity.
fn volume_of(scope: &Scope, v: &PersistentVolume) -> Result<Volume, String> {
    let name = v.name_any();
    let spec = v.spec.as_ref().ok_or("the PersistentVolume has no spec")?;
    let path = spec.local.as_ref().map(|l| Path::new(&l.path));
    if !valid_name(&name) || path != Some(scope.root.join(&name).as_path()) {
        return Err(format!(
            "the PersistentVolume {name} is not a volume of {} in {}",
            PROVISIONER,
            scope.root.display()
        ));
    }
    let mode = VolumeMode::parse(spec.volume_mode.as_deref()).map_err(|e| e.to_string())?;
    let capacity = spec
        .capacity
        .as_ref()
        .and_then(|c| c.get("storage"))
        .ok_or_else(|| format!("the PersistentVolume {name} has no spec.capacity.storage"))?;
    let bytes = kubevirt_api::quantity::bytes_of(capacity)
        .map_err(|e| format!("the capacity of the PersistentVolume {name}: {e}"))?;
    Ok(Volume { name, mode, bytes })
}

/// Why a snapshot pass failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotterError {
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The snapshots on disk could not be read or changed.
    #[error(transparent)]
    Disk(#[from] snapshots::SnapshotError),
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> SnapshotterError {
    let what = what.into();
    move |source| SnapshotterError::Api {
        what,
        source: Box::new(source),
    }
}

/// One pass: list contents and PVs, read the root's snapshots, act. The outcome of each action.
/// A cluster without the snapshot CRDs has nothing to do.
pub async fn pass(
    client: &Client,
    scope: &Scope,
) -> Result<Vec<Result<String, String>>, SnapshotterError> {
    let contents_api: Api<VolumeSnapshotContent> = Api::all(client.clone());
    let contents = match contents_api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        // No snapshot CRDs, or no permission to read them: no snapshots to serve.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => return Ok(Vec::new()),
        Err(e) => return Err(api("listing VolumeSnapshotContents")(e)),
    };
    if !contents.iter().any(|c| c.spec.driver == PROVISIONER) {
        return Ok(Vec::new());
    }
    let volumes = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api("listing PersistentVolumes"))?
        .items;
    let root = scope.root.clone();
    let on_disk = blocking(move || snapshots::observe(&root)).await?;
    let mut outcomes = Vec::new();
    for action in plan(scope, &contents, &volumes, &on_disk) {
        let outcome = act(&contents_api, scope, &contents, action).await;
        outcomes.push(outcome.map_err(|e| e.to_string()));
    }
    Ok(outcomes)
}

async fn act(
    contents: &Api<VolumeSnapshotContent>,
    scope: &Scope,
    seen: &[VolumeSnapshotContent],
    action: SnapshotAction,
) -> Result<String, SnapshotterError> {
    let pp = PatchParams::default();
    let finalizers = |name: &str| {
        seen.iter()
            .find(|c| c.name_any() == name)
            .map(|c| (c.finalizers().to_vec(), c.resource_version()))
            .unwrap_or_default()
    };
    match action {
        SnapshotAction::Protect { content } => {
            let (mut list, version) = finalizers(&content);
            list.push(CONTENT_BOUND_PROTECTION.to_string());
            let patch = json!({"metadata": {"finalizers": list, "resourceVersion": version}});
            contents
                .patch(&content, &pp, &Patch::Merge(&patch))
                .await
                .map_err(api(format!("protecting VolumeSnapshotContent {content}")))?;
            Ok(format!("VolumeSnapshotContent {content} protected"))
        }
        SnapshotAction::Take { content, volume } => {
            let (root, handle, v) = (scope.root.clone(), content.clone(), volume.clone());
            let now = now_ns();
            let taken = blocking(move || snapshots::take(&root, &v, &handle, now)).await;
            match taken {
                Ok((meta, method)) => {
                    write_status(contents, &content, &content, &meta).await?;
                    Ok(format!(
                        "snapshot {content} of {} taken ({method:?})",
                        volume.name
                    ))
                }
                Err(e) => {
                    let message = format!("Failed to create snapshot: {e}");
                    fail(contents, &content, &message).await?;
                    Err(e)
                }
            }
        }
        SnapshotAction::Report {
            content,
            handle,
            meta,
        } => {
            write_status(contents, &content, &handle, &meta).await?;
            Ok(format!("VolumeSnapshotContent {content} ready ({handle})"))
        }
        SnapshotAction::Fail { content, message } => {
            let message = format!("Failed to create snapshot: {message}");
            fail(contents, &content, &message).await?;
            Ok(format!("VolumeSnapshotContent {content}: {message}"))
        }
        SnapshotAction::Release { content, delete } => {
            if let Some(handle) = &delete {
                let (root, h) = (scope.root.clone(), handle.clone());
                blocking(move || snapshots::remove(&root, &h)).await?;
            }
            let (list, version) = finalizers(&content);
            let rest: Vec<String> = list
                .into_iter()
                .filter(|f| f != CONTENT_BOUND_PROTECTION)
                .collect();
            let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": version}});
            match contents.patch(&content, &pp, &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(api(format!("releasing VolumeSnapshotContent {content}"))(e)),
            }
            Ok(match delete {
                Some(h) => format!("snapshot {h} deleted with VolumeSnapshotContent {content}"),
                None => {
                    format!("VolumeSnapshotContent {content} released (Retain: its snapshot stays)")
                }
            })
        }
    }
}

async fn write_status(
    contents: &Api<VolumeSnapshotContent>,
    content: &str,
    handle: &str,
    meta: &Meta,
) -> Result<(), SnapshotterError> {
    let patch = json!({"status": {
        "snapshotHandle": handle,
        "creationTime": meta.creation_time,
        "restoreSize": i64::try_from(meta.restore_size).unwrap_or(i64::MAX),
        "readyToUse": true,
        "error": null,
    }});
    contents
        .patch_status(content, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(api(format!(
            "writing the status of VolumeSnapshotContent {content}"
        )))
}

async fn fail(
    contents: &Api<VolumeSnapshotContent>,
    content: &str,
    message: &str,
) -> Result<(), SnapshotterError> {
    let time = Time(jiff::Timestamp::now());
    let patch = json!({"status": {"readyToUse": false,
        "error": {"time": time, "message": message}}});
    contents
        .patch_status(content, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(api(format!(
            "writing the status of VolumeSnapshotContent {content}"
        )))
}

fn now_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, snapshots::SnapshotError> + Send + 'static,
) -> Result<T, SnapshotterError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(SnapshotterError::from),
        Err(e) => Err(SnapshotterError::Disk(snapshots::SnapshotError::Io {
            what: "a snapshot task in",
            path: std::path::PathBuf::from(snapshots::SNAPSHOTS),
            source: std::io::Error::other(e.to_string()),
        })),
    }
}

#[cfg(test)]
mod tests;
