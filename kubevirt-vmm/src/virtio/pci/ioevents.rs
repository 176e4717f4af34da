//! Where queue notifications are caught: the hypervisor side of a transport's ioeventfds.
//!
//! The VMM registers each queue's notify address with KVM so that a notify signals the queue's
//! eventfd without an exit to userspace. The addresses live in BAR 0, which a guest may move;
//! the transport then asks its [`IoEventRegistrar`] to move the registrations, so the old
//! address stops catching writes (another device may decode it next) and the new one is fast.

use std::io;

use vmm_sys_util::eventfd::EventFd;

/// Registers and unregisters notify addresses (under a VM: `KVM_IOEVENTFD`).
pub trait IoEventRegistrar: Send + Sync + std::fmt::Debug {
    /// Whether `base` is a BAR 0 address worth registering (inside the PCI MMIO window; not
    /// the all-ones pattern a guest writes while sizing the BAR).
    fn accepts(&self, base: u64) -> bool;
    /// Makes a write at `addr` signal `event`.
    fn register(&self, addr: u64, event: &EventFd) -> io::Result<()>;
    /// Undoes [`IoEventRegistrar::register`].
    fn unregister(&self, addr: u64, event: &EventFd) -> io::Result<()>;
}
