//! The VirtualMachineSnapshotContent: what a snapshot copies (the VM's metadata and spec, one
//! volume backup per included volume) and its status, read from its VolumeSnapshots (upstream's
//! `createContent` and `updateVMSnapshotContent`).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubevirt_api::core::v1::VirtualMachine;
use kubevirt_api::snapshot::v1beta1::{
    self as snap, SourceSpec, VirtualMachineSnapshot, VirtualMachineSnapshotContent,
    VirtualMachineSnapshotContentSpec, VirtualMachineSnapshotContentStatus, VolumeBackup,
};

use super::volumes::Included;
use super::vsnap::Progress;
use super::{CONTENT_FINALIZER, content_name, volume_snapshot_name};

/// The metadata a copy keeps: name, namespace, UID, generation, labels, annotations.
fn simplified(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        generation: meta.generation,
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        ..Default::default()
    }
}

/// The content of `snapshot` of `vm` copying the `included` volumes. The VM copy carries its
/// metadata and spec, not its status. (Upstream copies a running VM's spec from the VMI's
/// ControllerRevision; here a running VM's spec is the one its VMI was made from.)
pub fn build(
    snapshot: &VirtualMachineSnapshot,
    vm: &VirtualMachine,
    included: &[Included],
) -> VirtualMachineSnapshotContent {
    let uid = snapshot.metadata.uid.as_deref().unwrap_or_default();
    let backups = included
        .iter()
        .map(|i| VolumeBackup {
            volume_name: i.volume.clone(),
            persistent_volume_claim: snap::PersistentVolumeClaim {
                metadata: Some(ObjectMeta {
                    name: i.claim.metadata.name.clone(),
                    namespace: i.claim.metadata.namespace.clone(),
                    labels: i.claim.metadata.labels.clone(),
                    annotations: i.claim.metadata.annotations.clone(),
                    ..Default::default()
                }),
                spec: i.claim.spec.clone(),
            },
            volume_snapshot_name: Some(volume_snapshot_name(uid, &i.volume)),
        })
        .collect();
    let mut content = VirtualMachineSnapshotContent::new(
        &content_name(uid),
        VirtualMachineSnapshotContentSpec {
            source: SourceSpec {
                virtual_machine: Some(snap::VirtualMachine {
                    metadata: Some(simplified(&vm.metadata)),
                    spec: Some(vm.spec.clone()),
                    status: None,
                }),
            },
            virtual_machine_snapshot_name: snapshot.metadata.name.clone(),
            volume_backups: Some(backups),
        },
    );
    content.metadata.namespace = snapshot.metadata.namespace.clone();
    content.metadata.finalizers = Some(vec![CONTENT_FINALIZER.into()]);
    content
}

/// The status of `content` given its VolumeSnapshots: `progress[i]` is the VolumeSnapshot of
/// the i-th backup (`None`: it does not exist). `created` once every one is cut (its
/// creationTime then, kept after), ready when every one is ready; a VolumeSnapshot that is gone
/// after the content was created, or an error of one, is the content's error.
pub fn status(
    content: &VirtualMachineSnapshotContent,
    progress: &[Option<Progress>],
    now: Timestamp,
) -> VirtualMachineSnapshotContentStatus {
    let old = content.status.clone().unwrap_or_default();
    let was_created = old.creation_time.is_some();
    let mut missing = Vec::new();
    let mut statuses = Vec::new();
    let mut created = true;
    let mut ready = true;
    let mut error = None;
    let backups = content.spec.volume_backups.iter().flatten();
    for (backup, p) in backups.zip(progress) {
        let Some(name) = backup.volume_snapshot_name.as_deref() else {
            continue;
        };
        let Some(p) = p else {
            created = false;
            ready = false;
            if was_created {
                missing.push(name.to_string());
            }
            continue;
        };
        created &= p.creation_time.is_some();
        ready &= p.ready_to_use == Some(true);
        if error.is_none()
            && let Some(e) = &p.error
        {
            error = Some(format!("VolumeSnapshot {name} error: {e}"));
        }
        statuses.push(snap::VolumeSnapshotStatus {
            volume_snapshot_name: name.to_string(),
            ready_to_use: p.ready_to_use,
            creation_time: p.creation_time.clone(),
            error: p.error.as_ref().map(|m| snap::Error {
                message: Some(m.clone()),
                time: Some(Time(now)),
            }),
        });
    }
    if !missing.is_empty() {
        error = Some(format!("VolumeSnapshots ({}) missing", missing.join(",")));
    }
    let error = match error {
        // An unchanged message keeps its time.
        Some(m) if old.error.as_ref().and_then(|e| e.message.as_ref()) == Some(&m) => old.error,
        Some(m) if !ready => Some(snap::Error {
            message: Some(m),
            time: Some(Time(now)),
        }),
        _ => None,
    };
    VirtualMachineSnapshotContentStatus {
        creation_time: old.creation_time.or_else(|| created.then_some(Time(now))),
        error,
        ready_to_use: Some(ready),
        volume_snapshot_status: (!statuses.is_empty()).then_some(statuses),
    }
}

/// The volume names `content` backs up, and the others of its VM copy.
pub fn volume_lists(content: &VirtualMachineSnapshotContent) -> (Vec<String>, Vec<String>) {
    let backed: Vec<String> = content
        .spec
        .volume_backups
        .iter()
        .flatten()
        .map(|b| b.volume_name.clone())
        .collect();
    let volumes = content
        .spec
        .source
        .virtual_machine
        .as_ref()
        .and_then(|vm| vm.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.volumes.as_ref());
    let mut included = Vec::new();
    let mut excluded = Vec::new();
    for v in volumes.into_iter().flatten() {
        if backed.contains(&v.name) {
            included.push(v.name.clone());
        } else {
            excluded.push(v.name.clone());
        }
    }
    (included, excluded)
}

#[cfg(test)]
mod tests;
