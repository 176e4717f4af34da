//! What the snapshot controllers need of CSI's `snapshot.storage.k8s.io/v1` kinds: a
//! VolumeSnapshot's progress, a VolumeSnapshotClass's driver, and the VolumeSnapshot a volume
//! backup asks for. The objects are read and written as untyped JSON through these functions
//! only, so any cluster with the external-snapshotter CRDs serves them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Resource, ResourceExt};
use kubevirt_api::snapshot::v1beta1::{VirtualMachineSnapshotContent, VolumeBackup};
use serde_json::{Value, json};

use super::volumes::SnapshotClass;
use super::{DEFAULT_CLASS_ANNOTATION, SOURCE_NAME_LABEL, SOURCE_NAMESPACE_LABEL};

/// The API group of CSI snapshots.
pub const GROUP: &str = "snapshot.storage.k8s.io";

/// The `VolumeSnapshot` resource.
pub fn volume_snapshots() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", "VolumeSnapshot"))
}

/// The `VolumeSnapshotClass` resource (cluster-scoped).
pub fn volume_snapshot_classes() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", "VolumeSnapshotClass"))
}

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
pub fn progress(vs: &DynamicObject) -> Progress {
    let status = &vs.data["status"];
    Progress {
        name: vs.name_any(),
        ready_to_use: status["readyToUse"].as_bool(),
        creation_time: serde_json::from_value(status["creationTime"].clone()).ok(),
        error: status["error"]["message"].as_str().map(str::to_string),
    }
}

/// `class` as far as choosing one goes.
pub fn snapshot_class(class: &DynamicObject) -> SnapshotClass {
    SnapshotClass {
        name: class.name_any(),
        driver: class.data["driver"].as_str().unwrap_or_default().to_string(),
        default: class
            .annotations()
            .get(DEFAULT_CLASS_ANNOTATION)
            .is_some_and(|v| v == "true"),
    }
}

/// The VolumeSnapshot `backup` asks for, of `class`, owned by `content` (so deleting the
/// content deletes it), labelled with the source VM (upstream's `createVolumeSnapshot`).
pub fn for_backup(
    content: &VirtualMachineSnapshotContent,
    backup: &VolumeBackup,
    class: &str,
) -> DynamicObject {
    let source = content.spec.source.virtual_machine.as_ref();
    let source_meta = source.and_then(|vm| vm.metadata.as_ref());
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
    let resource = volume_snapshots();
    let mut vs = DynamicObject::new(
        backup.volume_snapshot_name.as_deref().unwrap_or_default(),
        &resource,
    );
    vs.metadata = ObjectMeta {
        name: backup.volume_snapshot_name.clone(),
        namespace: content.metadata.namespace.clone(),
        labels: Some(labels.into()),
        owner_references: Some(vec![OwnerReference {
            api_version: VirtualMachineSnapshotContent::api_version(&()).into_owned(),
            kind: VirtualMachineSnapshotContent::kind(&()).into_owned(),
            name: content.name_any(),
            uid: content.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    };
    vs.data = json!({
        "spec": {
            "source": {"persistentVolumeClaimName": claim},
            "volumeSnapshotClassName": class,
        }
    });
    vs
}

/// A claim's `dataSource` naming VolumeSnapshot `name`.
pub fn data_source(name: &str) -> Value {
    json!({"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": name})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_the_status() {
        let mut vs = DynamicObject::new("v", &volume_snapshots());
        vs.data = json!({"status": {"readyToUse": true,
                                    "creationTime": "2026-12-05T12:00:00Z",
                                    "error": {"message": "boom"}}});
        let p = progress(&vs);
        assert_eq!(p.name, "v");
        assert_eq!(p.ready_to_use, Some(true));
        assert!(p.creation_time.is_some());
        assert_eq!(p.error.as_deref(), Some("boom"));
        assert_eq!(progress(&DynamicObject::new("w", &volume_snapshots())).creation_time, None);
    }

    #[test]
    fn a_default_class_is_recognised() {
        let mut c = DynamicObject::new("c", &volume_snapshot_classes());
        c.data = json!({"driver": "d", "deletionPolicy": "Delete"});
        assert!(!snapshot_class(&c).default);
        c.metadata.annotations = Some([(DEFAULT_CLASS_ANNOTATION.into(), "true".into())].into());
        assert_eq!(
            snapshot_class(&c),
            SnapshotClass { name: "c".into(), driver: "d".into(), default: true }
        );
    }
}
