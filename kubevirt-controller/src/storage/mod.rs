//! The node's local volumes: the external provisioner and resizer of
//! `kubevirt-rs.io/local-volume` (docs/STORAGE.md has the contract). One instance runs per node
//! (a DaemonSet on a cluster, a task of `kubevirt-local up`): claims whose selected node is this
//! one get a directory (Filesystem) or a loop device over a sparse file (Block) under the node's
//! storage root and a PV pinned to the node; Released PVs with reclaim policy Delete lose their
//! data and object; growing a claim grows its volume.
//!
//! - [`claim`]: what a claim asks, checked (pure).
//! - [`plan`]: one pass as a pure function of the claims, PVs, classes and the root.
//! - [`disk`]: the root's volumes, made, grown and removed (idempotent).
//! - [`loopdev`]: loop devices, through `/sys/block` and `losetup`.
//! - [`provisioner`]: runs passes against an API server whenever claims, PVs or classes change.

pub mod claim;
pub mod copy;
pub mod disk;
pub mod loopdev;
pub mod plan;
pub mod provisioner;
pub mod snapshots;
pub mod snapshotter;

pub use disk::detach_all;
pub use provisioner::{ProvisionerConfig, run};

/// The provisioner's name, in StorageClasses and on the PVs it makes.
pub const PROVISIONER: &str = "kubevirt-rs.io/local-volume";
/// The annotation naming who provisioned a PV (upstream's).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The annotation the binder puts on a claim to hand it to an external provisioner.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Its older spelling, still honoured.
pub const STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The annotation the scheduler puts on a WaitForFirstConsumer claim: the node of its pod.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The node label a local PV's affinity names.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// A cluster node's storage root (kubevirt-local uses `<data>/node/volumes`).
pub const DEFAULT_ROOT: &str = "/var/lib/kubevirt-rs/volumes";
