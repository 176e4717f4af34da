//! The request queue: pop what the driver made available, run each request, return it on the
//! used ring, and mark the device broken if the driver corrupted the ring itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use crate::memory::GuestMemoryMmap;

use super::backend::BlockBackend;
use super::error_policy::ErrorPolicy;
use super::request::{SERIAL_LEN, process_request_with};
use crate::vm::io_stop::{DiskIoError, HeldQueue};
use crate::vm::lifecycle::Lifecycle;
use crate::virtio::chain::{ChainError, check_chain};
use crate::virtio::device::{HealthFlag, VirtioInterrupt};
use crate::virtio::report::QueueReporter;
use crate::virtio::worker::QueueHandler;

/// The disk as the device and its worker share it.
pub type SharedDisk = Arc<Mutex<Box<dyn BlockBackend>>>;

/// Why queue processing stopped.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The available ring is unreadable or its index jumped by more than the queue size.
    #[error("the available ring is corrupt: {0}")]
    AvailRing(virtio_queue::Error),
    /// A chain the driver may not make (see [`crate::virtio::ChainError`]).
    #[error("a malformed descriptor chain: {0}")]
    Chain(#[from] ChainError),
    /// A used-ring entry could not be written (bad head index or ring outside memory).
    #[error("returning descriptor {head} on the used ring: {source}")]
    UsedRing {
        /// The chain's head.
        head: u16,
        /// The error.
        source: virtio_queue::Error,
    },
}

/// What a queue whose disk's policy stops needs: the VM to pause, and how it is woken again.
#[derive(Debug)]
pub struct StopOnError {
    /// The VM's lifecycle, to pause it.
    pub lifecycle: Arc<Lifecycle>,
    /// A clone of the queue's notification eventfd: resume writes it.
    pub wake: vmm_sys_util::eventfd::EventFd,
    /// The disk's name in the error (its serial).
    pub disk: String,
}

/// Queue 0 of a virtio-blk device, with what it needs to run requests.
pub struct BlockQueue {
    memory: GuestMemoryMmap,
    queue: Queue,
    disk: SharedDisk,
    serial: [u8; SERIAL_LEN],
    report: QueueReporter,
    policy: ErrorPolicy,
    stop: Option<StopOnError>,
    /// Set while a failed request is held ([`ErrorPolicy::Stop`]): nothing is popped until the
    /// VM is resumed.
    held: Arc<AtomicBool>,
}

impl std::fmt::Debug for BlockQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockQueue")
            .field("queue", &self.queue)
            .finish()
    }
}

impl BlockQueue {
    /// A handler for `queue`.
    pub fn new(
        memory: GuestMemoryMmap,
        queue: Queue,
        disk: SharedDisk,
        serial: [u8; SERIAL_LEN],
        interrupt: Arc<dyn VirtioInterrupt>,
        health: HealthFlag,
    ) -> Self {
        BlockQueue {
            memory,
            queue,
            disk,
            serial,
            report: QueueReporter::new("virtio-blk", interrupt, health),
            policy: ErrorPolicy::Report,
            stop: None,
            held: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Applies the disk's error policy (without this: [`ErrorPolicy::Report`]). A policy that
    /// stops needs [`BlockQueue::with_stop`] too; without it errors are reported.
    pub fn with_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How a stopping policy pauses the VM and is woken again.
    pub fn with_stop(mut self, stop: StopOnError) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Runs every available request; returns how many completed. A corrupt ring or a
    /// malformed chain marks the device broken (the transport reports `DEVICE_NEEDS_RESET`),
    /// sends a configuration change notification and stops processing until the driver resets
    /// it; requests completed before it are on the used ring.
    pub fn process(&mut self) -> Result<usize, QueueError> {
        if self.report.is_broken() || self.held.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let mut failed = None;
        let result = self.process_available(&mut failed);
        self.report
            .finish(&mut self.queue, &self.memory, 0, &result);
        if let (Some(error), Some(stop)) = (failed, &self.stop) {
            self.hold(error, stop);
        }
        result
    }

    /// Holds the failed request (already put back on the available ring) and pauses the VM.
    fn hold(&self, error: std::io::Error, stop: &StopOnError) {
        let Ok(wake) = stop.wake.try_clone() else {
            log::error!("virtio-blk {}: {error}; cannot hold the request", stop.disk);
            return;
        };
        self.held.store(true, Ordering::SeqCst);
        stop.lifecycle.stop_for_io_error(
            DiskIoError {
                disk: stop.disk.clone(),
                error: error.to_string(),
            },
            HeldQueue {
                held: self.held.clone(),
                wake,
            },
        );
    }

    /// Runs what is available; a request the error policy holds is put back on the available
    /// ring (with every chain popped after it) and its error left in `failed`.
    fn process_available(&mut self, failed: &mut Option<std::io::Error>) -> Result<usize, QueueError> {
        let policy = match (self.policy, &self.stop) {
            (ErrorPolicy::Stop | ErrorPolicy::Enospace, None) => ErrorPolicy::Report,
            (p, _) => p,
        };
        let mut done = 0;
        loop {
            // The iterator yields at most `size` chains (it refuses an index that jumped
            // further), each of at most `size` descriptors: bounded work per pass.
            let chains: Vec<_> = self
                .queue
                .iter(&self.memory)
                .map_err(QueueError::AvailRing)?
                .collect();
            if chains.is_empty() {
                return Ok(done);
            }
            let mut disk = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
            let popped = chains.len();
            for (i, chain) in chains.into_iter().enumerate() {
                let head = chain.head_index();
                check_chain(&chain, &self.memory)?;
                let len = match process_request_with(
                    &self.memory,
                    chain,
                    disk.as_mut(),
                    &self.serial,
                    policy,
                ) {
                    Ok(len) => len,
                    Err(e) => {
                        // This chain and the ones after it go back: they run on resume.
                        let back = (popped - i) as u16;
                        let next = self.queue.next_avail().wrapping_sub(back);
                        self.queue.set_next_avail(next);
                        *failed = Some(e);
                        return Ok(done);
                    }
                };
                self.queue
                    .add_used(&self.memory, head, len)
                    .map_err(|source| QueueError::UsedRing { head, source })?;
                done += 1;
            }
        }
    }
}

impl QueueHandler for BlockQueue {
    fn handle_queue(&mut self, _index: usize) {
        // An error is logged and reported to the driver by `process`.
        let _ = self.process();
    }

    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        vec![self.queue.state()]
    }
}

#[cfg(test)]
mod tests;
