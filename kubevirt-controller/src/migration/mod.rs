//! Live migration, the cluster's part (upstream's virt-controller migration controller): a
//! `VirtualMachineInstanceMigration` (VMIM) gets a target virt-launcher pod, and the VMI's
//! `status.migrationState` is the contract with the node agents that move the guest.
//!
//! ```text
//! VMIM Pending ── target pod created (label kubevirt.io/migrationJobUID=<vmim uid>) ──▶ Scheduling
//!      ──▶ Scheduled (pod bound, Running) ── VMI status.migrationState {migrationUid, sourceNode,
//!          sourcePod, targetNode, targetPod} ──▶ PreparingTarget
//!      ──▶ TargetReady (the target node's agent started the target launcher `serve --incoming`
//!          and wrote targetNodeAddress)
//!      ──▶ Running (the source node's agent sent `migrate`, wrote startTimestamp)
//!      ──▶ Succeeded (completed; the target's agent took the VMI over: nodeName, domain detected)
//!        | Failed (any step: the target pod goes, migrationState.failed, the source runs on)
//! ```
//!
//! Cancel (upstream's): a VMIM carries [`FINALIZER`] until it ends. Deleted before the VMI's
//! `migrationState` names it, it fails at once (its target pod goes); deleted after, the VMI's
//! `migrationState.abortRequested` is set, the source's agent cancels its launcher's migration
//! and writes `abortStatus` (Succeeded: the migration failed and the guest runs on in the
//! source; Failed: it completed first), and the VMIM ends Failed or Succeeded. Then the
//! finalizer goes and the deletion completes.
//!
//! - [`plan`]: one sync of a VMIM as a pure function of (VMIM, its VMI, the VMI's pods, now).
//! - [`render`]: the target pod (the VMI's pod, plus the migration label, its own run directory
//!   and `--incoming`), pure.
//! - [`controller`]: runs the plan with kube-rs.
//! - [`active`]: which of a VMI's pods is its launcher now (the VMI controller's view).

pub mod active;
pub mod controller;
pub mod events;
pub mod plan;
pub mod render;

/// The label that marks a migration's target pod with the migration's uid (upstream's).
pub const MIGRATION_JOB_LABEL: &str = "kubevirt.io/migrationJobUID";
/// Upstream's finalizer on a VirtualMachineInstanceMigration that has not ended: deleting it
/// (`kubectl delete vmim`, `virtctl migrate-cancel`) aborts the migration, and the object
/// stays until the abort is settled.
pub const FINALIZER: &str = "kubevirt.io/migrationJobFinalize";
/// The label naming a migration's VMI (upstream's `MigrationSelectorLabel`).
pub const VMI_NAME_LABEL: &str = "kubevirt.io/vmi-name";
/// The socket the target launcher listens on for the source, in its run directory.
pub const INCOMING_SOCKET: &str = "migration.sock";
/// The socket the node agent offers the source launcher, in the source's run directory: the
/// agent carries what arrives there to the target's node agent.
pub const OUTGOING_SOCKET: &str = "outgoing.sock";

/// VMIM phases (upstream's `VirtualMachineInstanceMigrationPhase`).
pub mod phase {
    /// Created, nothing done yet.
    pub const PENDING: &str = "Pending";
    /// The target pod exists and waits for a node.
    pub const SCHEDULING: &str = "Scheduling";
    /// The target pod runs on a node.
    pub const SCHEDULED: &str = "Scheduled";
    /// The VMI's migrationState names the target; its node agent prepares it.
    pub const PREPARING_TARGET: &str = "PreparingTarget";
    /// The target launcher waits for the source.
    pub const TARGET_READY: &str = "TargetReady";
    /// The guest's memory is on its way.
    pub const RUNNING: &str = "Running";
    /// The guest runs on the target.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The migration ended without moving the guest.
    pub const FAILED: &str = "Failed";

    /// Whether `phase` is final.
    pub fn is_final(phase: &str) -> bool {
        phase == SUCCEEDED || phase == FAILED
    }
}
