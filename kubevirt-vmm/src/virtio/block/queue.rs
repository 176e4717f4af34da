//! The request queue: pop what the driver made available, run each request, return it on the
//! used ring, and mark the device broken if the driver corrupted the ring itself.

use std::sync::{Arc, Mutex, PoisonError};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use crate::memory::GuestMemoryMmap;

use super::backend::BlockBackend;
use super::request::{SERIAL_LEN, process_request};
use crate::virtio::device::{HealthFlag, VirtioInterrupt, VirtioInterruptType};
use crate::virtio::worker::QueueHandler;

/// The disk as the device and its worker share it.
pub type SharedDisk = Arc<Mutex<Box<dyn BlockBackend>>>;

/// Why queue processing stopped.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The available ring is unreadable or its index jumped by more than the queue size.
    #[error("the available ring is corrupt: {0}")]
    AvailRing(virtio_queue::Error),
    /// A used-ring entry could not be written (bad head index or ring outside memory).
    #[error("returning descriptor {head} on the used ring: {source}")]
    UsedRing {
        /// The chain's head.
        head: u16,
        /// The error.
        source: virtio_queue::Error,
    },
}

/// Queue 0 of a virtio-blk device, with what it needs to run requests.
pub struct BlockQueue {
    memory: GuestMemoryMmap,
    queue: Queue,
    disk: SharedDisk,
    serial: [u8; SERIAL_LEN],
    interrupt: Arc<dyn VirtioInterrupt>,
    health: HealthFlag,
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
            interrupt,
            health,
        }
    }

    /// Runs every available request; returns how many completed. A corrupt ring marks the
    /// device broken (the transport reports `DEVICE_NEEDS_RESET`) and stops processing until
    /// the driver resets it.
    pub fn process(&mut self) -> Result<usize, QueueError> {
        if self.health.is_broken() {
            return Ok(0);
        }
        let result = self.process_available();
        if result.is_err() {
            self.health.mark_broken();
            let _ = self.interrupt.trigger(VirtioInterruptType::Config);
        }
        let done = match &result {
            Ok(n) => *n,
            Err(_) => 0,
        };
        if done > 0 && self.queue.needs_notification(&self.memory).unwrap_or(true) {
            let _ = self.interrupt.trigger(VirtioInterruptType::Queue(0));
        }
        result
    }

    fn process_available(&mut self) -> Result<usize, QueueError> {
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
            for chain in chains {
                let head = chain.head_index();
                let len = process_request(&self.memory, chain, disk.as_mut(), &self.serial);
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
        if let Err(e) = self.process() {
            log::warn!("virtio-blk: {e}; the device needs a reset");
        }
    }

    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        vec![self.queue.state()]
    }
}

#[cfg(test)]
mod tests;
