//! Claims whose `dataSource`/`dataSourceRef` is a VolumeSnapshot: which snapshot on this node's
//! disk fills the new volume, or why none can (the external-provisioner's checks for a CSI
//! driver's `CreateVolume` from a snapshot).

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

use super::super::PROVISIONER;
use super::super::claim::{Request, human};
use super::super::snapshots::Meta;
use super::{Observed, Scope};

/// The snapshot a claim restores: its handle on this node and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restorable {
    /// The snapshot's handle (its directory under `<root>/snapshots`).
    pub handle: String,
    /// What the snapshot is.
    pub meta: Meta,
}

/// The snapshot `name` (in the claim's namespace) that claim `c` asking `request` restores, or
/// the message refusing it (naming the field).
pub fn resolve(
    scope: &Scope,
    seen: Observed<'_>,
    c: &PersistentVolumeClaim,
    name: &str,
    request: &Request,
) -> Result<Restorable, String> {
    let namespace = c.namespace().unwrap_or_default();
    let field = "spec.dataSource";
    let vs = seen
        .snapshots
        .iter()
        .find(|s| s.name_any() == name && s.namespace().as_deref() == Some(namespace.as_str()))
        .ok_or_else(|| format!("{field}: the VolumeSnapshot {namespace}/{name} does not exist"))?;
    let bound = vs
        .status
        .as_ref()
        .and_then(|s| s.bound_volume_snapshot_content_name.as_deref())
        .ok_or_else(|| {
            format!("{field}: the VolumeSnapshot {namespace}/{name} is not bound to a VolumeSnapshotContent yet")
        })?;
    let content = seen
        .contents
        .iter()
        .find(|k| k.name_any() == bound)
        .ok_or_else(|| format!("{field}: the VolumeSnapshotContent {bound} of VolumeSnapshot {namespace}/{name} does not exist"))?;
    let r = &content.spec.volume_snapshot_ref;
    if r.name.as_deref() != Some(name) || r.namespace.as_deref() != Some(namespace.as_str()) {
        return Err(format!(
            "{field}: the VolumeSnapshotContent {bound} is bound to another VolumeSnapshot ({}/{})",
            r.namespace.as_deref().unwrap_or_default(),
            r.name.as_deref().unwrap_or_default()
        ));
    }
    if content.spec.driver != PROVISIONER {
        return Err(format!(
            "{field}: the VolumeSnapshot {namespace}/{name} was taken by {}, not {PROVISIONER}",
            content.spec.driver
        ));
    }
    if !(vs.is_ready() && content.is_ready()) {
        return Err(format!("{field}: snapshot {namespace}/{name} is not Ready"));
    }
    let handle = content.snapshot_handle().ok_or_else(|| {
        format!("{field}: the VolumeSnapshotContent {bound} has no snapshotHandle")
    })?;
    let meta = seen.disk.snapshots.get(handle).ok_or_else(|| {
        format!(
            "{field}: the snapshot {handle} of VolumeSnapshot {namespace}/{name} is not on node {} (a local snapshot stays on its volume's node)",
            scope.node
        )
    })?;
    if request.bytes < meta.restore_size {
        return Err(format!(
            "spec.resources.requests.storage: requested volume size {} ({}) is less than the size {} ({}) for the source snapshot {name}",
            request.bytes,
            request.quantity.0,
            meta.restore_size,
            human(meta.restore_size)
        ));
    }
    if meta.volume_mode != request.mode.as_str() {
        return Err(format!(
            "spec.volumeMode: the snapshot {namespace}/{name} is of a {} volume; restore it into a {} claim",
            meta.volume_mode, meta.volume_mode
        ));
    }
    Ok(Restorable {
        handle: handle.to_string(),
        meta: meta.clone(),
    })
}
