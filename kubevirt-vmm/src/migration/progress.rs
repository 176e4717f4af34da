//! What a migration has done so far (libvirt's job info) and the handle that cancels it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Where a migration is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MigrationPhase {
    /// Not started, or connecting to the target.
    #[default]
    Setup,
    /// Copying RAM while the guest runs.
    PreCopy,
    /// Guest paused, the last dirty pages and the device state on the way.
    StopAndCopy,
    /// The target acknowledged: the guest runs there.
    Completed,
    /// Cancelled or failed before the target's ack: the source runs the guest.
    Failed,
}

/// A migration's counters, updated after every round (libvirt `virDomainGetJobStats` terms).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MigrationProgress {
    /// Where it is.
    pub phase: MigrationPhase,
    /// Copy rounds finished (the first is the full copy).
    pub rounds: u32,
    /// Guest RAM in bytes.
    pub memory_total: u64,
    /// Bytes written to the stream, framing included.
    pub bytes_sent: u64,
    /// Pages sent with their data.
    pub pages_sent: u64,
    /// Pages sent as zero pages (8 bytes each).
    pub zero_pages: u64,
    /// Bytes of disk contents sent (the disks that live with the VMI), zero ranges included.
    pub disk_bytes: u64,
    /// Pages dirtied during the last round, still to send.
    pub dirty_pages: u64,
    /// Pages the guest dirtied per second during the last round.
    pub dirty_rate_pages_per_sec: u64,
    /// Stream throughput measured over the last round, bytes per second.
    pub bandwidth_bytes_per_sec: u64,
    /// Time since the migration started.
    pub elapsed: Duration,
    /// How long the guest was paused (set once it completed).
    pub downtime: Option<Duration>,
}

/// Shared between the thread running a migration and those watching or cancelling it.
#[derive(Debug, Default)]
pub struct MigrationControl {
    cancel: AtomicBool,
    progress: Mutex<MigrationProgress>,
}

impl MigrationControl {
    /// A fresh handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the migration to stop at its next frame; it fails with
    /// `MigrationError::Cancelled` and the source VM keeps running. Too late once the target
    /// acknowledged.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Whether [`MigrationControl::cancel`] was called.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// A copy of the counters.
    pub fn progress(&self) -> MigrationProgress {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut MigrationProgress)) {
        f(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner));
    }
}
