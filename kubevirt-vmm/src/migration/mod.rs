//! Live migration: a running VM moves to another process (on this host or another) over a
//! byte stream, with a pause of milliseconds.
//!
//! Pre-copy, as QEMU and Cloud Hypervisor do it, built on the snapshot code:
//! 1. the source ([`crate::Vm::migrate_to`]) sends a preamble and the VM's shape (vCPUs, RAM
//!    layout); the target ([`crate::VmBuilder::migrate_from`]) checks it against its own
//!    configuration and answers `Ready`;
//! 2. dirty tracking starts (`dirty.rs`): KVM's dirty log for the guest's writes, and the
//!    guest-memory bitmaps for the VMM's own writes (virtio devices write guest RAM from their
//!    threads, which KVM does not log); then all of RAM goes over, zero pages as 8-byte entries;
//! 3. rounds of the pages dirtied meanwhile, until what is left fits the downtime target at the
//!    bandwidth measured over the last round (or the round limit is reached);
//! 4. the source pauses the vCPUs, saves their state and the devices' (devices quiesce: a block
//!    device finishes its in-flight requests), sends the last dirty pages and the sealed
//!    snapshot state, and waits for the target's `Ack` — the target acks only once the VM is
//!    built from it. Just before the state goes out the source gives up its disks' write
//!    locks (devices quiesced, disks flushed), and the target takes them before it acks
//!    (refusing with the disk named if another VM holds one): the handover of
//!    `virtio::block`'s image locks, as QEMU's inactivate/activate;
//! 5. on the ack the source gives the VM up for good (it ends with
//!    [`crate::ExitReason::Migrated`]), waits until its vCPU threads have ended, and sends `Go`;
//!    the target starts the guest on `Go`. So the guest's vCPUs never exist on both sides at
//!    once, not even on their way out.
//!
//! Anything that goes wrong before the ack — the stream breaks, the target refuses, the
//! completion timeout passes, [`MigrationControl::cancel`] — resumes the source (if it was
//! running; after taking its disk locks back) and the target discards what it received. After the ack nothing resumes the
//! source; if `Go` is lost the target does not start either, so the guest never runs twice.
//! `wire.rs` describes the framing.

mod dirty;
mod disk_wire;
mod disks;
mod progress;
mod source;
mod target;
pub mod wire;

use std::time::Duration;

pub use dirty::{DirtyLogError, IGNORE_VMM_WRITES};
pub use progress::{MigrationControl, MigrationPhase, MigrationProgress};
pub use wire::WireError;

/// How a migration is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationOptions {
    /// Stream bytes per second at most; `None`: as fast as the stream takes them.
    pub bandwidth_limit: Option<u64>,
    /// The longest acceptable pause: pre-copy stops once the dirty pages left can be sent in
    /// this time at the measured bandwidth.
    pub downtime_target: Duration,
    /// Pre-copy rounds at most; then the guest is paused whatever is left.
    pub max_rounds: u32,
    /// The whole migration must finish within this time or it is aborted (the source keeps
    /// the VM); `None`: no limit. KubeVirt derives it from `completionTimeoutPerGiB`.
    pub completion_timeout: Option<Duration>,
}

impl Default for MigrationOptions {
    /// No bandwidth limit, 300 ms downtime (QEMU's default), 30 rounds, no timeout.
    fn default() -> Self {
        MigrationOptions {
            bandwidth_limit: None,
            downtime_target: Duration::from_millis(300),
            max_rounds: 30,
            completion_timeout: None,
        }
    }
}

/// Why a migration failed. On the source, every one of these leaves the VM running (if it
/// was); on the target, nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The stream: broken, truncated, corrupt or out of protocol.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer sent an error or an abort.
    #[error("the migration {side} reported: {reason}")]
    Peer {
        /// "target" or "source".
        side: &'static str,
        /// What it said.
        reason: String,
    },
    /// The VM is not in a state that migrates.
    #[error("the VM is {0:?}: only a running or paused VM can be migrated")]
    NotMigratable(crate::VmState),
    /// The source's shape differs from the target's configuration.
    #[error(
        "the source VM has {source_vm}, this target is configured with {target}: start the target with the source's configuration"
    )]
    Layout {
        /// The source's vCPUs and RAM.
        source_vm: String,
        /// The target's.
        target: String,
    },
    /// A page outside the announced RAM, or not page-aligned.
    #[error(
        "the source sent a page at guest address {0:#x}, which is not a page of the announced RAM"
    )]
    BadPage(u64),
    /// Dirty tracking failed.
    #[error(transparent)]
    DirtyLog(#[from] DirtyLogError),
    /// Pausing, resuming, saving or building the VM failed.
    #[error("{0}")]
    Vm(String),
    /// [`MigrationControl::cancel`] was called.
    #[error("the migration was cancelled; the source keeps running the VM")]
    Cancelled,
    /// The completion timeout passed.
    #[error(
        "the migration did not complete within {0:?} (round {1}); the source keeps running the VM"
    )]
    Timeout(Duration, u32),
    /// A disk's image lock could not be handed over: the target could not take it (another
    /// VM holds the image), or the source could not give it up.
    #[error("disk {index} (in the order the VM's disks were added): {source}")]
    DiskLock {
        /// The disk's index.
        index: usize,
        /// Why.
        #[source]
        source: crate::virtio::block::BackendError,
    },
    /// The source's disks differ from the target's.
    #[error(
        "the source VM has {source_disks}, this target has {target}: start the target with the source's disks (the same sizes, the same ones copied)"
    )]
    Disks {
        /// The source's disks.
        source_disks: String,
        /// The target's.
        target: String,
    },
    /// A disk chunk that is not inside one of the target's copied disks.
    #[error(
        "the source sent {len} bytes at offset {offset} of disk {disk}, which does not fit: {why}"
    )]
    BadDiskChunk {
        /// The disk index.
        disk: u32,
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Why it does not fit.
        why: String,
    },
    /// Reading guest memory failed (a layout bug).
    #[error("reading guest memory at {0:#x} failed")]
    ReadGuest(u64),
}

/// What a finished migration did.
pub type MigrationStats = MigrationProgress;
