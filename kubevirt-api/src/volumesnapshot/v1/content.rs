//! `VolumeSnapshotContent`: a snapshot on the storage system, cluster-scoped, bound one-to-one to a
//! VolumeSnapshot.

use super::{DeletionPolicy, VolumeSnapshotError};
use k8s_openapi::api::core::v1::ObjectReference;

/// The snapshot on the storage system (`VolumeSnapshotContentSpec`).
// Several printer columns share a type: clippy reads the derive's repeated keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(kube::CustomResource, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshotContent",
    plural = "volumesnapshotcontents",
    status = "VolumeSnapshotContentStatus",
    derive = "PartialEq",
    shortname = "vsc",
    shortname = "vscs",
    annotation(
        "api-approved.kubernetes.io",
        "https://github.com/kubernetes-csi/external-snapshotter/pull/814"
    ),
    printcolumn(
        name = "ReadyToUse",
        type_ = "boolean",
        json_path = ".status.readyToUse",
        description = "Indicates if the snapshot is ready to be used to restore a volume."
    ),
    printcolumn(
        name = "RestoreSize",
        type_ = "integer",
        json_path = ".status.restoreSize",
        description = "Represents the complete size of the snapshot in bytes"
    ),
    printcolumn(
        name = "DeletionPolicy",
        type_ = "string",
        json_path = ".spec.deletionPolicy",
        description = "Determines whether this VolumeSnapshotContent and its physical snapshot on the underlying storage system should be deleted when its bound VolumeSnapshot is deleted."
    ),
    printcolumn(
        name = "Driver",
        type_ = "string",
        json_path = ".spec.driver",
        description = "Name of the CSI driver used to create the physical snapshot on the underlying storage system."
    ),
    printcolumn(
        name = "VolumeSnapshotClass",
        type_ = "string",
        json_path = ".spec.volumeSnapshotClassName",
        description = "Name of the VolumeSnapshotClass to which this snapshot belongs."
    ),
    printcolumn(
        name = "VolumeSnapshot",
        type_ = "string",
        json_path = ".spec.volumeSnapshotRef.name",
        description = "Name of the VolumeSnapshot object to which this VolumeSnapshotContent object is bound."
    ),
    printcolumn(
        name = "VolumeSnapshotNamespace",
        type_ = "string",
        json_path = ".spec.volumeSnapshotRef.namespace",
        description = "Namespace of the VolumeSnapshot object to which this VolumeSnapshotContent object is bound."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[cfg_attr(not(feature = "schemars"), kube(schema = "disabled"))]
#[kube(doc = "The actual \"on-disk\" snapshot object in the underlying storage system.")]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    /// The VolumeSnapshot this content is bound to (name and namespace); immutable.
    pub volume_snapshot_ref: ObjectReference,
    /// Whether the content and the physical snapshot go when the VolumeSnapshot is deleted.
    pub deletion_policy: DeletionPolicy,
    /// The CSI driver that made (or makes) the snapshot.
    pub driver: String,
    /// The VolumeSnapshotClass the snapshot was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// A volume to snapshot, or a snapshot that already exists; immutable.
    pub source: VolumeSnapshotContentSource,
    /// The source volume's mode (`Filesystem` or `Block`), if known; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_mode: Option<String>,
}

/// The CSI source of a snapshot (`VolumeSnapshotContentSource`): exactly one member is set.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSource {
    /// The CSI `volume_id` of the volume to snapshot (a dynamic snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
    /// The CSI `snapshot_id` of a snapshot that already exists (a pre-provisioned snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
}

/// What the CSI snapshotter observed (`VolumeSnapshotContentStatus`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentStatus {
    /// The CSI `snapshot_id`; unset while the snapshot is being made or after it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// When the snapshot was taken, in Unix nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    /// The snapshot's complete size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schemars", schemars(range(min = 0)))]
    pub restore_size: Option<i64>,
    /// Whether a volume can be restored from the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The last error seen while creating the snapshot; cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// The CSI `group_snapshot_id` of the group snapshot this one is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_handle: Option<String>,
}

impl VolumeSnapshotContent {
    /// Whether the snapshot is ready to restore from (`status.readyToUse`).
    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.ready_to_use)
            .unwrap_or(false)
    }

    /// The snapshot's handle: the status's (a dynamic snapshot, once made) or the source's (a
    /// pre-provisioned one).
    pub fn snapshot_handle(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.snapshot_handle.as_deref())
            .or(self.spec.source.snapshot_handle.as_deref())
    }
}
