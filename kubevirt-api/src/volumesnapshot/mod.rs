//! CSI volume snapshots (`snapshot.storage.k8s.io`): the API the Kubernetes external-snapshotter
//! serves, typed.
//!
//! KubeVirt's VirtualMachineSnapshot takes one VolumeSnapshot per claim; CDI clones and restores
//! through them. On a real cluster the external-snapshotter installs these CRDs, so they are not in
//! [`all_crds`](crate::object::all_crds): [`volume_snapshot_crds`] renders them for a cluster (such
//! as kubevirt-local's) that has none.
//!
//! ```
//! use kubevirt_api::volumesnapshot::v1::VolumeSnapshot;
//!
//! let vs = VolumeSnapshot::of_claim("before-upgrade", "rootdisk");
//! let json = serde_json::to_value(&vs).unwrap();
//! assert_eq!(json["spec"]["source"]["persistentVolumeClaimName"], "rootdisk");
//! ```

pub mod v1;

#[cfg(feature = "schemars")]
mod crd;
#[cfg(feature = "schemars")]
pub use self::crd::volume_snapshot_crds;

/// The API group.
pub const GROUP: &str = "snapshot.storage.k8s.io";

/// Annotation marking a VolumeSnapshotClass its driver's default (value `"true"`).
pub const IS_DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";

/// Finalizer on a VolumeSnapshot while a claim is being restored from it.
pub const SNAPSHOT_AS_SOURCE_PROTECTION: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";

/// Finalizer on a VolumeSnapshot while it is bound to a VolumeSnapshotContent.
pub const SNAPSHOT_BOUND_PROTECTION: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";

/// Finalizer on a VolumeSnapshotContent while it is bound to a VolumeSnapshot.
pub const CONTENT_BOUND_PROTECTION: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

/// Annotation on a VolumeSnapshotContent the snapshot controller made for a VolumeSnapshot
/// (a dynamic snapshot), so deleting the snapshot applies the content's deletion policy.
pub const BOUND_BY_CONTROLLER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";

/// Annotation the snapshot controller sets on a content whose VolumeSnapshot is being deleted, so
/// the CSI snapshotter deletes the physical snapshot.
pub const BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";

/// The name upstream's snapshot controller gives the content of a dynamic snapshot.
pub fn content_name_for(snapshot_uid: &str) -> String {
    format!("snapcontent-{snapshot_uid}")
}
