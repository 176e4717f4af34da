//! Virtio over PCI: the [`VirtioDevice`] trait a device (in this crate or another program)
//! implements, the modern virtio-pci transport (`pci::VirtioPciDevice`), queue workers, and
//! the devices themselves ([`block`], [`console`], [`net`], [`rng`]).
//!
//! Devices never trust the guest: descriptor chains are walked through rust-vmm's
//! virtio-queue (bounded by the queue size, every buffer checked against guest memory), a bad
//! request fails with an error status, and a queue or chain the driver corrupts (a ring index
//! that jumped, a descriptor loop, a `next` past the table, a buffer outside RAM: `chain`) marks
//! the device `DEVICE_NEEDS_RESET` with a configuration change notification instead of
//! panicking or spinning.

pub mod block;
internal_mod!(chain);
pub mod console;
internal_mod!(device);
pub mod net;
internal_mod!(pci);
internal_mod!(report);
pub mod rng;
internal_mod!(worker);

#[cfg(test)]
pub(crate) mod test_utils {
    //! Shared by the devices' unit tests.

    use virtio_queue::{Queue, QueueT};
    use vm_memory::GuestAddress;

    use super::{VirtioInterrupt, VirtioInterruptType};

    /// A ready queue of `size` entries: descriptors at `desc`, the available ring at `avail`,
    /// the used ring at `used`.
    pub(crate) fn ready_queue(size: u16, desc: u64, avail: u64, used: u64) -> Queue {
        let mut q = Queue::new(size).expect("a valid queue size");
        q.try_set_desc_table_address(GuestAddress(desc))
            .expect("an aligned descriptor table");
        q.try_set_avail_ring_address(GuestAddress(avail))
            .expect("an aligned available ring");
        q.try_set_used_ring_address(GuestAddress(used))
            .expect("an aligned used ring");
        q.set_ready(true);
        q
    }

    /// An interrupt sink for tests that poll the used ring instead of taking interrupts.
    pub(crate) struct NoInterrupt;

    impl VirtioInterrupt for NoInterrupt {
        fn trigger(&self, _kind: VirtioInterruptType) -> std::io::Result<()> {
            Ok(())
        }
    }
}

pub use chain::ChainError;
pub use device::{
    ActivateContext, ActivateError, DeviceQueue, HealthFlag, VirtioDevice, VirtioInterrupt,
    VirtioInterruptType,
};
pub use pci::VirtioPciError;

/// `VIRTIO_F_VERSION_1`: the modern interface; the only one this transport offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_RING_F_INDIRECT_DESC`: indirect descriptor tables.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: the device may process queues.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}
