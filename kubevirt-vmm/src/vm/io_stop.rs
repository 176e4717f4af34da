//! A VM paused by a disk's error policy ([`crate::virtio::block::ErrorPolicy::Stop`]): the disk
//! holds the request that failed and asks for the pause; [`Lifecycle::resume`] lets every held
//! queue run its requests again, the failed one first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use vmm_sys_util::eventfd::EventFd;

use super::PAUSE_TIMEOUT;
use super::lifecycle::Lifecycle;

/// Why a disk paused the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskIoError {
    /// The disk (its serial, else its position).
    pub disk: String,
    /// What the backend said.
    pub error: String,
}

impl std::fmt::Display for DiskIoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disk {}: {}", self.disk, self.error)
    }
}

/// A queue that holds a failed request: its flag, and how to wake its worker.
#[derive(Debug)]
pub(crate) struct HeldQueue {
    /// Set while the queue holds its request; cleared on resume.
    pub held: Arc<AtomicBool>,
    /// Written on resume: the worker looks at its queue again.
    pub wake: EventFd,
}

/// The held queues and the first error that paused the VM.
#[derive(Debug, Default)]
pub(crate) struct IoStops {
    held: Vec<HeldQueue>,
    error: Option<DiskIoError>,
}

impl Lifecycle {
    /// A disk's backend failed and its policy stops: `queue` holds the request, and the VM is
    /// paused (waiting up to the usual pause timeout for the vCPUs). The first error is kept
    /// until [`Lifecycle::resume`].
    pub(crate) fn stop_for_io_error(&self, error: DiskIoError, queue: HeldQueue) {
        {
            let mut stops = self.io_stops.lock().unwrap_or_else(PoisonError::into_inner);
            log::warn!("{error}: pausing the VM until it is resumed (error policy)");
            stops.error.get_or_insert(error);
            stops.held.push(queue);
        }
        if let Err(e) = self.pause(PAUSE_TIMEOUT) {
            log::warn!("pausing the VM for a disk error: {e}");
        }
    }

    /// The disk error that paused the VM, until it is resumed.
    pub fn io_error(&self) -> Option<DiskIoError> {
        self.io_stops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error
            .clone()
    }

    /// After a resume: every held queue runs its requests again.
    pub(crate) fn release_held_queues(&self) {
        let held = {
            let mut stops = self.io_stops.lock().unwrap_or_else(PoisonError::into_inner);
            stops.error = None;
            std::mem::take(&mut stops.held)
        };
        for q in held {
            q.held.store(false, Ordering::SeqCst);
            let _ = q.wake.write(1);
        }
    }
}
