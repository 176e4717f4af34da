//! `VolumeSnapshotClass`: how a driver makes snapshots (cluster-scoped, no `spec`: its fields sit on
//! the object's root).

use super::DeletionPolicy;
use std::collections::BTreeMap;

/// A VolumeSnapshotClass's fields, on the object's root (`driver`, `parameters`, `deletionPolicy`).
// Several printer columns share a type: clippy reads the derive's repeated keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(kube::CustomResource, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshotClass",
    plural = "volumesnapshotclasses",
    no_spec,
    derive = "PartialEq",
    shortname = "vsclass",
    shortname = "vsclasses",
    annotation(
        "api-approved.kubernetes.io",
        "https://github.com/kubernetes-csi/external-snapshotter/pull/814"
    ),
    printcolumn(name = "Driver", type_ = "string", json_path = ".driver"),
    printcolumn(
        name = "DeletionPolicy",
        type_ = "string",
        json_path = ".deletionPolicy",
        description = "Determines whether a VolumeSnapshotContent created through the VolumeSnapshotClass should be deleted when its bound VolumeSnapshot is deleted."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[cfg_attr(not(feature = "schemars"), kube(schema = "disabled"))]
#[kube(
    doc = "Parameters the storage system uses when it makes a volume snapshot, named by a VolumeSnapshot."
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClassFields {
    /// The storage driver that handles this class.
    pub driver: String,
    /// Driver-specific parameters for making snapshots; opaque to Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// Whether contents made through this class go when their VolumeSnapshot is deleted.
    pub deletion_policy: DeletionPolicy,
}

impl VolumeSnapshotClass {
    /// Whether the class is its driver's default (annotation
    /// [`IS_DEFAULT_CLASS`](super::super::IS_DEFAULT_CLASS) is `"true"`).
    pub fn is_default(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::super::IS_DEFAULT_CLASS))
            .is_some_and(|v| v == "true")
    }
}
