//! `snapshot.storage.k8s.io/v1`: the CSI volume snapshot API of the Kubernetes external-snapshotter.
//!
//! Field names, nesting and optionality follow upstream's `client/apis/volumesnapshot/v1` Go types,
//! so a document written for upstream decodes here and encodes back with no field lost.

mod class;
mod content;
mod error;
mod snapshot;

pub use self::class::{VolumeSnapshotClass, VolumeSnapshotClassFields};
pub use self::content::{
    VolumeSnapshotContent, VolumeSnapshotContentSource, VolumeSnapshotContentSpec,
    VolumeSnapshotContentStatus,
};
pub use self::error::{DeletionPolicy, VolumeSnapshotError};
pub use self::snapshot::{
    VolumeSnapshot, VolumeSnapshotSource, VolumeSnapshotSpec, VolumeSnapshotStatus,
};
