//! `VolumeSnapshot`: a user's request for a point-in-time snapshot of a claim, or for binding to a
//! snapshot that already exists.

use super::VolumeSnapshotError;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What a VolumeSnapshot asks for (`VolumeSnapshotSpec`).
// Several printer columns share a type: clippy reads the derive's repeated keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(
    kube::CustomResource, Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshot",
    plural = "volumesnapshots",
    namespaced,
    status = "VolumeSnapshotStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "vs",
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
        name = "SourcePVC",
        type_ = "string",
        json_path = ".spec.source.persistentVolumeClaimName",
        description = "If a new snapshot needs to be created, this contains the name of the source PVC from which this snapshot was (or will be) created."
    ),
    printcolumn(
        name = "SourceSnapshotContent",
        type_ = "string",
        json_path = ".spec.source.volumeSnapshotContentName",
        description = "If a snapshot already exists, this contains the name of the existing VolumeSnapshotContent object representing the existing snapshot."
    ),
    printcolumn(
        name = "RestoreSize",
        type_ = "string",
        json_path = ".status.restoreSize",
        description = "Represents the minimum size of volume required to rehydrate from this snapshot."
    ),
    printcolumn(
        name = "SnapshotClass",
        type_ = "string",
        json_path = ".spec.volumeSnapshotClassName",
        description = "The name of the VolumeSnapshotClass requested by the VolumeSnapshot."
    ),
    printcolumn(
        name = "SnapshotContent",
        type_ = "string",
        json_path = ".status.boundVolumeSnapshotContentName",
        description = "Name of the VolumeSnapshotContent object to which the VolumeSnapshot object intends to bind to."
    ),
    printcolumn(
        name = "CreationTime",
        type_ = "date",
        json_path = ".status.creationTime",
        description = "Timestamp when the point-in-time snapshot was taken by the underlying storage system."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[cfg_attr(not(feature = "schemars"), kube(schema = "disabled"))]
#[kube(
    doc = "A user's request for either creating a point-in-time snapshot of a persistent volume, or binding to a pre-existing snapshot."
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// Where the snapshot comes from; immutable.
    pub source: VolumeSnapshotSource,
    /// The VolumeSnapshotClass asked for; unset picks the default class of the source's driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

/// Where a snapshot comes from (`VolumeSnapshotSource`): exactly one member is set.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// The claim (in the snapshot's namespace) to take a new snapshot of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// A pre-existing VolumeSnapshotContent to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

/// What the snapshot controller observed (`VolumeSnapshotStatus`), mirrored from the bound content.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// The VolumeSnapshotContent this snapshot binds to; consumers check that it points back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    /// When the storage system took the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// Whether a volume can be restored from the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The smallest volume a restore from this snapshot needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
    /// The last error seen while creating the snapshot; cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
    /// The VolumeGroupSnapshot this snapshot is part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_group_snapshot_name: Option<String>,
}

impl VolumeSnapshot {
    /// A snapshot named `name` of the claim `claim` (both in the snapshot's namespace).
    pub fn of_claim(name: &str, claim: &str) -> Self {
        VolumeSnapshot::new(
            name,
            VolumeSnapshotSpec {
                source: VolumeSnapshotSource {
                    persistent_volume_claim_name: Some(claim.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    /// Whether the snapshot is ready to restore from (`status.readyToUse`).
    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.ready_to_use)
            .unwrap_or(false)
    }
}
