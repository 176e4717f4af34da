//! KubeVirt's snapshot controllers (`snapshot.kubevirt.io/v1beta1`, upstream's
//! `pkg/storage/snapshot`): a VirtualMachineSnapshot locks its VM (`status.snapshotInProgress`),
//! copies the VM into a VirtualMachineSnapshotContent and cuts one CSI VolumeSnapshot per
//! claim-backed volume whose StorageClass has a VolumeSnapshotClass; a VirtualMachineRestore
//! locks its target (`status.restoreInProgress`), creates a claim from each VolumeSnapshot and
//! rewrites (or creates) the VM to use them.
//!
//! Online snapshots: upstream freezes the guest's file systems through the guest agent. There is
//! no guest agent here, so the snapshot controller holds the guest still by pausing the VMI (the
//! `pause` subresource) before the first VolumeSnapshot is created and unpausing it once every
//! VolumeSnapshot is cut (has a `creationTime`), or when the snapshot fails or is deleted. The
//! indications are upstream's for an agentless guest: `Online` and `NoGuestAgent`.
//!
//! The decisions are pure functions beside their tests ([`volumes`], [`content`], [`status`],
//! [`lock`], [`restore`]); [`controller`] and [`restore_controller`] run them with kube-rs.

pub mod conditions;
pub mod content;
pub mod controller;
pub mod events;
pub mod lock;
pub mod memory;
pub mod readiness;
pub mod restore;
pub mod restore_controller;
pub mod status;
#[cfg(test)]
mod testing;
pub mod volumes;
pub mod vsnap;

/// Finalizer on a VirtualMachineSnapshot while it holds its VM or content.
pub const SNAPSHOT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshot-protection";
/// Finalizer on a VirtualMachineSnapshotContent while its snapshot exists.
pub const CONTENT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshotcontent-protection";
/// Finalizer on a VM while a snapshot holds it.
pub const SOURCE_FINALIZER: &str = "snapshot.kubevirt.io/snapshot-source-protection";
/// Label on VolumeSnapshots: the source VM's name.
pub const SOURCE_NAME_LABEL: &str = "snapshot.kubevirt.io/source-vm-name";
/// Label on VolumeSnapshots: the source VM's namespace.
pub const SOURCE_NAMESPACE_LABEL: &str = "snapshot.kubevirt.io/source-vm-namespace";
/// Content annotation (ours): the UID of the VMI this controller paused to cut the volumes, so
/// it unpauses exactly the instance it paused, and only once.
pub const PAUSED_VMI_ANNOTATION: &str = "snapshot.kubevirt.io/paused-vmi-uid";
/// Annotation on a restored VM: `<restore name>-<restore UID>` of the last restore applied.
pub const LAST_RESTORE_ANNOTATION: &str = "restore.kubevirt.io/lastRestoreUID";
/// Annotation on restored claims: the restore that made them.
pub const RESTORE_NAME_ANNOTATION: &str = "restore.kubevirt.io/name";
/// Label on restored claims: the snapshot's source VM.
pub const RESTORE_SOURCE_NAME_LABEL: &str = "restore.kubevirt.io/source-vm-name";
/// Label on restored claims: the snapshot's source VM's namespace.
pub const RESTORE_SOURCE_NAMESPACE_LABEL: &str = "restore.kubevirt.io/source-vm-namespace";

/// The default `spec.failureDeadline` (upstream's `DefaultFailureDeadline`).
pub const DEFAULT_FAILURE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// The content name of a snapshot (upstream's `GetVMSnapshotContentName`).
pub fn content_name(snapshot_uid: &str) -> String {
    format!("vmsnapshot-content-{snapshot_uid}")
}

/// The VolumeSnapshot of one volume of a snapshot.
pub fn volume_snapshot_name(snapshot_uid: &str, volume: &str) -> String {
    format!("vmsnapshot-{snapshot_uid}-volume-{volume}")
}

/// The claim a restore makes for one volume (`RandomizeNames`, upstream's `restorePVCName`).
pub fn restore_claim_name(restore_uid: &str, volume: &str) -> String {
    format!("restore-{restore_uid}-{volume}")
}

/// Whether `meta` lists `finalizer`.
pub(crate) fn has_finalizer(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    finalizer: &str,
) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}
