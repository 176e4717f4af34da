//! What a device's queue handler tells the driver after a pass over a queue: the buffers it
//! used (a queue interrupt, when the driver wants one), or a driver error only a reset ends — a
//! corrupt ring or a chain the spec forbids (`crate::virtio::chain`) — reported as virtio 1.2,
//! 2.1.2 says: `DEVICE_NEEDS_RESET` (through the [`HealthFlag`] the transport reads) and a
//! configuration change notification, after which the device moves nothing until the driver
//! resets it. Every device (blk, net, rng, console) goes through here, so they all break the
//! same way.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use crate::memory::GuestMemoryMmap;
use crate::virtio::chain::ChainError;
use crate::virtio::device::{HealthFlag, VirtioInterrupt, VirtioInterruptType};

/// Why a pass over a queue stopped: the driver corrupted a ring or made a malformed chain.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// A chain the driver may not make (see [`crate::virtio::ChainError`]).
    #[error("queue {queue}: a malformed descriptor chain: {source}")]
    Chain {
        /// The queue.
        queue: usize,
        /// What is wrong with it.
        source: ChainError,
    },
    /// The available ring is unreadable or its index jumped by more than the queue size.
    #[error("the available ring of queue {queue} is corrupt: {source}")]
    AvailRing {
        /// The queue.
        queue: usize,
        /// The error.
        source: virtio_queue::Error,
    },
    /// A used-ring entry could not be written (bad head index or ring outside memory).
    #[error("returning descriptor {head} on the used ring of queue {queue}: {source}")]
    UsedRing {
        /// The queue.
        queue: usize,
        /// The chain's head.
        head: u16,
        /// The error.
        source: virtio_queue::Error,
    },
}

/// How one device's queue handler signals the driver (see the module documentation).
#[derive(Clone)]
pub struct QueueReporter {
    device: &'static str,
    interrupt: Arc<dyn VirtioInterrupt>,
    health: HealthFlag,
}

impl std::fmt::Debug for QueueReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueReporter")
            .field("device", &self.device)
            .field("broken", &self.health.is_broken())
            .finish()
    }
}

impl QueueReporter {
    /// Signals for `device` (its name in the log, e.g. "virtio-rng") through `interrupt`,
    /// marking `health` on a driver error.
    pub fn new(
        device: &'static str,
        interrupt: Arc<dyn VirtioInterrupt>,
        health: HealthFlag,
    ) -> Self {
        QueueReporter {
            device,
            interrupt,
            health,
        }
    }

    /// Whether a driver error stopped the device: a handler then moves nothing until reset.
    pub fn is_broken(&self) -> bool {
        self.health.is_broken()
    }

    /// The driver made an error only a reset ends: logs it, marks the device
    /// `DEVICE_NEEDS_RESET` and sends a configuration change notification.
    pub fn driver_error(&self, error: &dyn std::fmt::Display) {
        log::warn!("{}: {error}; the device needs a reset", self.device);
        self.health.mark_broken();
        if let Err(e) = self.interrupt.trigger(VirtioInterruptType::Config) {
            log::warn!(
                "{}: the configuration change notification failed: {e}",
                self.device
            );
        }
    }

    /// Reports a pass over queue `index` that returned `result` (buffers used, or the
    /// driver's error): an error goes to [`QueueReporter::driver_error`]; used buffers raise
    /// the queue's interrupt unless the driver asked not to be notified.
    pub fn finish<E: std::fmt::Display>(
        &self,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        index: u16,
        result: &Result<usize, E>,
    ) {
        match result {
            Err(e) => self.driver_error(e),
            Ok(n) if *n > 0 => {
                if queue.needs_notification(memory).unwrap_or(true) {
                    let _ = self.interrupt.trigger(VirtioInterruptType::Queue(index));
                }
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<VirtioInterruptType>>);

    impl VirtioInterrupt for Recorded {
        fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
            self.0.lock().unwrap().push(kind);
            Ok(())
        }
    }

    #[test]
    fn used_buffers_notify_the_queue_and_an_error_breaks_the_device_and_notifies_config() {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap();
        let mut queue = crate::virtio::test_utils::ready_queue(8, 0x1000, 0x2000, 0x3000);
        let interrupt = Arc::new(Recorded::default());
        let health = HealthFlag::default();
        let r = QueueReporter::new("virtio-test", interrupt.clone(), health.clone());
        r.finish::<RingError>(&mut queue, &memory, 1, &Ok(0));
        assert!(interrupt.0.lock().unwrap().is_empty(), "nothing used");
        r.finish::<RingError>(&mut queue, &memory, 1, &Ok(2));
        assert_eq!(
            *interrupt.0.lock().unwrap(),
            [VirtioInterruptType::Queue(1)]
        );
        assert!(!r.is_broken());
        let error = RingError::Chain {
            queue: 1,
            source: ChainError::Empty { head: 9 },
        };
        r.finish(&mut queue, &memory, 1, &Err::<usize, _>(error));
        assert!(r.is_broken() && health.is_broken());
        assert_eq!(
            *interrupt.0.lock().unwrap(),
            [VirtioInterruptType::Queue(1), VirtioInterruptType::Config]
        );
    }
}
