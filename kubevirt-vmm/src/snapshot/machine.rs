//! VM-wide in-kernel state: the irqchip (both PICs and the IOAPIC), the PIT and the KVM clock.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip,
    kvm_pit_state2,
};
use kvm_ioctls::VmFd;

use super::codec::{CodecError, Decoder, Encoder, field};

/// Errors reading or writing VM-wide state.
#[derive(Debug, thiserror::Error)]
pub enum MachineStateError {
    /// An ioctl failed.
    #[error("{ioctl} failed: {source}")]
    Ioctl {
        /// The ioctl (and which chip).
        ioctl: &'static str,
        /// The kernel's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> MachineStateError {
    move |source| MachineStateError::Ioctl { ioctl, source }
}

/// What `KVM_SET_CLOCK` takes to resume the guest's clock at `read` (a `KVM_GET_CLOCK`
/// value): the clock value only. The flags describe how it was read (TSC-stable, with
/// realtime) and are not for setting: with `KVM_CLOCK_REALTIME` set, KVM would advance the
/// clock by the host time since the read. Without them the guest's clock resumes where it
/// stopped, as its vCPUs do.
pub(crate) fn settable_clock(read: &kvm_clock_data) -> kvm_clock_data {
    kvm_clock_data {
        clock: read.clock,
        ..Default::default()
    }
}

/// The in-kernel devices' state.
#[derive(Clone, Copy)]
pub struct MachineState {
    /// PIC master, PIC slave, IOAPIC, in that order.
    pub irqchips: [kvm_irqchip; 3],
    /// The PIT (i8254).
    pub pit: kvm_pit_state2,
    /// kvmclock's time base.
    pub clock: kvm_clock_data,
}

impl std::fmt::Debug for MachineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineState")
            .field("clock", &self.clock.clock)
            .finish_non_exhaustive()
    }
}

const CHIPS: [(u32, &str, &str); 3] = [
    (
        KVM_IRQCHIP_PIC_MASTER,
        "KVM_GET_IRQCHIP (PIC master)",
        "KVM_SET_IRQCHIP (PIC master)",
    ),
    (
        KVM_IRQCHIP_PIC_SLAVE,
        "KVM_GET_IRQCHIP (PIC slave)",
        "KVM_SET_IRQCHIP (PIC slave)",
    ),
    (
        KVM_IRQCHIP_IOAPIC,
        "KVM_GET_IRQCHIP (IOAPIC)",
        "KVM_SET_IRQCHIP (IOAPIC)",
    ),
];

impl MachineState {
    /// Reads the state of `vm` (whose vCPUs are parked).
    ///
    /// # Errors
    /// [`MachineStateError::Ioctl`] naming the call.
    pub fn save(vm: &VmFd) -> Result<Self, MachineStateError> {
        let mut irqchips = [kvm_irqchip::default(); 3];
        for (chip, (id, get, _)) in irqchips.iter_mut().zip(CHIPS) {
            chip.chip_id = id;
            vm.get_irqchip(chip).map_err(ioctl(get))?;
        }
        let pit = vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?;
        let clock = vm.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?;
        Ok(MachineState {
            irqchips,
            pit,
            clock,
        })
    }

    /// Writes this state into `vm`, whose irqchip and PIT exist and whose vCPUs have not run.
    ///
    /// # Errors
    /// [`MachineStateError::Ioctl`] naming the call.
    pub fn restore(&self, vm: &VmFd) -> Result<(), MachineStateError> {
        vm.set_pit2(&self.pit).map_err(ioctl("KVM_SET_PIT2"))?;
        vm.set_clock(&settable_clock(&self.clock))
            .map_err(ioctl("KVM_SET_CLOCK"))?;
        for (chip, (_, _, set)) in self.irqchips.iter().zip(CHIPS) {
            vm.set_irqchip(chip).map_err(ioctl(set))?;
        }
        Ok(())
    }

    /// Appends this state to a snapshot payload.
    pub fn encode(&self, e: &mut Encoder) {
        for chip in &self.irqchips {
            e.pod(chip);
        }
        e.pod(&self.pit);
        e.pod(&self.clock);
    }

    /// Reads the state back from a snapshot payload, checking each chip is the one expected.
    ///
    /// # Errors
    /// [`CodecError`] naming the field that is truncated or wrong.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, CodecError> {
        let mut irqchips = [kvm_irqchip::default(); 3];
        for (chip, (id, get, _)) in irqchips.iter_mut().zip(CHIPS) {
            *chip = d.pod(&field(get))?;
            if chip.chip_id != id {
                return Err(CodecError::BadTag {
                    what: format!("the irqchip saved by {get}"),
                    tag: chip.chip_id as u8,
                });
            }
        }
        let pit = d.pod(&field("PIT state"))?;
        let clock = d.pod(&field("KVM clock"))?;
        Ok(MachineState {
            irqchips,
            pit,
            clock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_of_a_fresh_vm_round_trips_through_kvm_and_the_codec() {
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        vm.create_pit2(kvm_bindings::kvm_pit_config::default())
            .unwrap();
        let mut state = MachineState::save(&vm).unwrap();
        state.irqchips[2].chip.ioapic.id = 5 << 24;
        let mut e = Encoder::new();
        state.encode(&mut e);
        let buf = e.finish();
        let mut d = Decoder::new(&buf);
        let back = MachineState::decode(&mut d).unwrap();
        d.finish().unwrap();

        let other = kvm.create_vm().unwrap();
        other.create_irq_chip().unwrap();
        other
            .create_pit2(kvm_bindings::kvm_pit_config::default())
            .unwrap();
        back.restore(&other).unwrap();
        let again = MachineState::save(&other).unwrap();
        // SAFETY: the IOAPIC chip's union member is `ioapic` (chip_id 2), as KVM filled it.
        let id = unsafe { again.irqchips[2].chip.ioapic.id };
        assert_eq!(id, 5 << 24);
    }

    #[test]
    fn a_swapped_chip_is_refused() {
        let mut e = Encoder::new();
        for _ in 0..3 {
            e.pod(&kvm_irqchip::default());
        }
        let buf = e.finish();
        let err = MachineState::decode(&mut Decoder::new(&buf)).unwrap_err();
        assert!(err.to_string().contains("PIC slave"), "{err}");
    }
}
