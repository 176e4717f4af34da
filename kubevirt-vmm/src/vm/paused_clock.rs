//! kvmclock stands still while the VM is paused, as QEMU keeps it: the clock is read
//! (`KVM_GET_CLOCK`) once every vCPU has parked and written back (`KVM_SET_CLOCK`) before they
//! run again, so a paused guest does not see its clock jump forward by the pause on resume.
//! This covers every pause (user, a disk's error policy, a migration that fails and resumes).

use std::sync::{Arc, Mutex, PoisonError};

use kvm_bindings::kvm_clock_data;
use kvm_ioctls::VmFd;

use crate::snapshot::settable_clock;

/// `KVM_GET_CLOCK`'s request number (`_IOR(KVMIO, 0x7c, struct kvm_clock_data)`): a thread
/// that pauses a VM issues it, so a confined one must be allowed it.
pub const KVM_GET_CLOCK: u64 = ioctl_nr(2, 0x7c);
/// `KVM_SET_CLOCK`'s request number (`_IOW(KVMIO, 0x7b, struct kvm_clock_data)`): a thread
/// that resumes a paused VM issues it.
pub const KVM_SET_CLOCK: u64 = ioctl_nr(1, 0x7b);

/// `_IOC(dir, KVMIO, nr, sizeof(struct kvm_clock_data))`.
const fn ioctl_nr(dir: u64, nr: u64) -> u64 {
    const KVMIO: u64 = 0xAE;
    let size = std::mem::size_of::<kvm_clock_data>() as u64;
    (dir << 30) | (size << 16) | (KVMIO << 8) | nr
}

/// The VM whose clock is held and the value it had when the VM paused.
#[derive(Default)]
pub(crate) struct PausedClock {
    inner: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    vm: Option<Arc<VmFd>>,
    at_pause: Option<kvm_clock_data>,
}

impl std::fmt::Debug for PausedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PausedClock")
            .field("vm", &held.vm.is_some())
            .field("at_pause", &held.at_pause.map(|c| c.clock))
            .finish()
    }
}

impl PausedClock {
    /// Holds the clock of `vm` across pauses from now on.
    pub(crate) fn attach(&self, vm: Arc<VmFd>) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).vm = Some(vm);
    }

    /// Every vCPU has parked: remember the clock (a second pause keeps the first value).
    pub(crate) fn paused(&self) {
        let mut held = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if held.at_pause.is_some() {
            return;
        }
        let Some(vm) = &held.vm else { return };
        match vm.get_clock() {
            Ok(clock) => held.at_pause = Some(clock),
            // The guest's clock then runs on through the pause, as it did before.
            Err(e) => log::warn!("KVM_GET_CLOCK at pause failed: {e}"),
        }
    }

    /// The vCPUs are about to run again: the clock resumes where it stopped.
    pub(crate) fn resuming(&self) {
        let mut held = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(clock) = held.at_pause.take() else {
            return;
        };
        let Some(vm) = &held.vm else { return };
        if let Err(e) = vm.set_clock(&settable_clock(&clock)) {
            log::warn!("KVM_SET_CLOCK at resume failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_numbers_are_the_kernels() {
        // From <linux/kvm.h> on x86-64, struct kvm_clock_data being 48 bytes.
        assert_eq!(KVM_GET_CLOCK, 0x8030_AE7C);
        assert_eq!(KVM_SET_CLOCK, 0x4030_AE7B);
    }
}
