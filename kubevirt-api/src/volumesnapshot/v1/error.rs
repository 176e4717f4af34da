//! Types both the snapshot and its content use: the deletion policy and the error record.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

crate::string_enum::string_enum! {
    /// What happens to a VolumeSnapshotContent, and the snapshot on the storage system, when its
    /// bound VolumeSnapshot is deleted (`deletionPolicy`).
    DeletionPolicy {
        /// `Delete`: the content and the physical snapshot are deleted.
        Delete = "Delete",
        /// `Retain`: the content and the physical snapshot are kept.
        Retain = "Retain",
    }
}

/// The last error seen while creating a snapshot (`VolumeSnapshotError`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotError {
    /// When the error was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// What went wrong; may be logged, so it holds no secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl VolumeSnapshotError {
    /// An error with `message`, seen at `time`.
    pub fn new(message: impl Into<String>, time: Time) -> Self {
        VolumeSnapshotError {
            time: Some(time),
            message: Some(message.into()),
        }
    }
}
