//! What the snapshot controllers need of CSI's `snapshot.storage.k8s.io/v1` kinds
//! (kubevirt-api's [`volumesnapshot`](kubevirt_api::volumesnapshot)): a VolumeSnapshot's
//! progress, a VolumeSnapshotClass's driver, and the VolumeSnapshot a volume backup asks for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::{Resource, ResourceExt};
use kubevirt_api::snapshot::v1beta1::{VirtualMachineSnapshotContent, VolumeBackup};
use kubevirt_api::volumesnapshot::v1::{VolumeSnapshot, VolumeSnapshotClass};

use super::volumes::SnapshotClass;
use super::{SOURCE_NAME_LABEL, SOURCE_NAMESPACE_LABEL};

/// The API group of CSI snapshots.
pub const GROUP: &str = "snapshot.storage.k8s.io";

/// A VolumeSnapshot's progress (its `status`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Its name.
    pub name: String,
    /// `status.readyToUse`.
    pub ready_to_use: Option<bool>,
    /// `status.creationTime`: when the volume was cut.
    pub creation_time: Option<Time>,
    /// `status.error.message`.
    pub error: Option<String>,
}

/// The progress of `vs`.
pub fn progress(vs: &VolumeSnapshot) -> Progress {
    let status = vs.status.clone().unwrap_or_default();
    Progress {
        name: vs.name_any(),
        ready_to_use: status.ready_to_use,
        creation_time: status.creation_time,
        error: status.error.and_then(|e| e.message),
    }
}

/// `class` as far as choosing one goes.
pub fn snapshot_class(class: &VolumeSnapshotClass) -> SnapshotClass {
    SnapshotClass {
        name: class.name_any(),
        driver: class.spec.driver.clone(),
        default: class.is_default(),
    }
}

/// The VolumeSnapshot `backup` asks for, of `class`, owned by `content` (so deleting the
/// content deletes it), labelled with the source VM (upstream's `createVolumeSnapshot`).
pub fn for_backup(
    content: &VirtualMachineSnapshotContent,
    backup: &VolumeBackup,
    class: &str,
) -> VolumeSnapshot {
    let source_meta = content
        .spec
        .source
        .virtual_machine
        .as_ref()
        .and_then(|vm| vm.metadata.as_ref());
    let claim = backup
        .persistent_volume_claim
        .metadata
        .as_ref()
        .and_then(|m| m.name.clone())
        .unwrap_or_default();
    let labels = [
        (
            SOURCE_NAME_LABEL.to_string(),
            source_meta.and_then(|m| m.name.clone()).unwrap_or_default(),
        ),
        (
            SOURCE_NAMESPACE_LABEL.to_string(),
            source_meta
                .and_then(|m| m.namespace.clone())
                .unwrap_or_default(),
        ),
    ];
    let name = backup.volume_snapshot_name.as_deref().unwrap_or_default();
    let mut vs = VolumeSnapshot::of_claim(name, &claim);
    vs.spec.volume_snapshot_class_name = Some(class.to_string());
    vs.metadata.namespace = content.metadata.namespace.clone();
    vs.metadata.labels = Some(labels.into());
    vs.metadata.owner_references = Some(vec![OwnerReference {
        api_version: VirtualMachineSnapshotContent::api_version(&()).into_owned(),
        kind: VirtualMachineSnapshotContent::kind(&()).into_owned(),
        name: content.name_any(),
        uid: content.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    vs
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubevirt_api::volumesnapshot::v1::VolumeSnapshotStatus;

    #[test]
    fn progress_reads_the_status() {
        let mut vs = VolumeSnapshot::of_claim("v", "c");
        vs.status = Some(
            serde_json::from_value(serde_json::json!({
                "readyToUse": true, "creationTime": "2026-12-05T12:00:00Z",
                "error": {"message": "boom"}
            }))
            .expect("the status decodes"),
        );
        let p = progress(&vs);
        assert_eq!(p.name, "v");
        assert_eq!(p.ready_to_use, Some(true));
        assert!(p.creation_time.is_some());
        assert_eq!(p.error.as_deref(), Some("boom"));
        vs.status = Some(VolumeSnapshotStatus::default());
        assert_eq!(progress(&vs).creation_time, None);
    }

    #[test]
    fn a_default_class_is_recognised() {
        let mut c: VolumeSnapshotClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "c"}, "driver": "d", "deletionPolicy": "Delete"
        }))
        .expect("the class decodes");
        assert!(!snapshot_class(&c).default);
        c.metadata.annotations = Some(
            [(
                "snapshot.storage.kubernetes.io/is-default-class".into(),
                "true".into(),
            )]
            .into(),
        );
        assert_eq!(
            snapshot_class(&c),
            SnapshotClass {
                name: "c".into(),
                driver: "d".into(),
                default: true
            }
        );
    }
}
