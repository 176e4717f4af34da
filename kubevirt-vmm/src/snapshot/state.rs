//! The state file's payload: everything but guest RAM, in a fixed order.
//!
//! ```text
//! vCPU count (u32), memory size (u64), memory file id (u64), RAM layout (memory.rs),
//! machine state (machine.rs), one vCPU state per vCPU (vcpu.rs), devices (devices.rs)
//! ```

use super::codec::{CodecError, Decoder, Encoder, field};
use super::devices::{DeviceRecord, decode_devices, encode_devices};
use super::machine::MachineState;
use super::memory::MemoryLayout;
use super::vcpu::VcpuState;

/// Most vCPUs a decoder accepts (the VMM's own limit).
const MAX_VCPUS: usize = 255;

/// A whole snapshot but guest RAM.
#[derive(Debug)]
pub struct SnapshotState {
    /// vCPUs of the VM.
    pub vcpus: u32,
    /// Guest RAM in bytes, as configured.
    pub memory_size: u64,
    /// The id in the memory file's trailer: pairs the two files.
    pub memory_id: u64,
    /// Where each RAM region is in the memory file.
    pub layout: MemoryLayout,
    /// Irqchip, PIT, clock.
    pub machine: MachineState,
    /// One per vCPU, in index order.
    pub vcpu_states: Vec<VcpuState>,
    /// The bus devices.
    pub devices: Vec<DeviceRecord>,
}

impl SnapshotState {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.u32(self.vcpus);
        e.u64(self.memory_size);
        e.u64(self.memory_id);
        self.layout.encode(&mut e);
        self.machine.encode(&mut e);
        e.len(self.vcpu_states.len());
        for v in &self.vcpu_states {
            v.encode(&mut e);
        }
        encode_devices(&self.devices, &mut e);
        e.finish()
    }

    /// Reads a payload.
    ///
    /// # Errors
    /// [`CodecError`] naming the field that is truncated, too long or invalid, or
    /// [`CodecError::Trailing`] when bytes follow the last field.
    pub fn decode(payload: &[u8]) -> Result<Self, CodecError> {
        let mut d = Decoder::new(payload);
        let vcpus = d.u32(&field("vCPU count"))?;
        let memory_size = d.u64(&field("memory size"))?;
        let memory_id = d.u64(&field("memory file id"))?;
        let layout = MemoryLayout::decode(&mut d)?;
        let machine = MachineState::decode(&mut d)?;
        let n = d.len(MAX_VCPUS, &field("vCPU state count"))?;
        if n as u64 != u64::from(vcpus) {
            return Err(CodecError::Inconsistent(format!(
                "it holds {n} vCPU states for a {vcpus}-vCPU VM"
            )));
        }
        let vcpu_states = (0..n)
            .map(|i| VcpuState::decode(&mut d, i))
            .collect::<Result<_, _>>()?;
        let devices = decode_devices(&mut d)?;
        d.finish()?;
        Ok(SnapshotState {
            vcpus,
            memory_size,
            memory_id,
            layout,
            machine,
            vcpu_states,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusRange;
    use kvm_bindings::{
        kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_pit_state2,
        kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    };
    use proptest::prelude::*;

    fn sample() -> SnapshotState {
        let mut irqchips = [kvm_irqchip::default(); 3];
        for (i, c) in irqchips.iter_mut().enumerate() {
            c.chip_id = i as u32;
        }
        let vcpu = |rip| VcpuState {
            cpuid: Vec::new(),
            mp_state: kvm_mp_state::default(),
            regs: kvm_regs {
                rip,
                ..Default::default()
            },
            sregs: kvm_sregs::default(),
            xsave: kvm_xsave::default(),
            xcrs: kvm_xcrs::default(),
            debugregs: kvm_debugregs::default(),
            lapic: kvm_lapic_state::default(),
            tsc_khz: 0,
            msrs: Vec::new(),
            events: kvm_vcpu_events::default(),
        };
        SnapshotState {
            vcpus: 2,
            memory_size: 4 << 20,
            memory_id: 0x1234,
            layout: MemoryLayout::of_ranges(&crate::memory::ram_ranges(4 << 20)),
            machine: MachineState {
                irqchips,
                pit: kvm_pit_state2::default(),
                clock: kvm_clock_data::default(),
            },
            vcpu_states: vec![vcpu(0x1000), vcpu(0x2000)],
            devices: vec![DeviceRecord {
                bus: "pio".into(),
                range: BusRange { base: 0x70, len: 2 },
                name: "cmos".into(),
                state: Some(vec![1, 2, 3]),
            }],
        }
    }

    #[test]
    fn a_whole_state_round_trips() {
        let bytes = sample().encode();
        let back = SnapshotState::decode(&bytes).unwrap();
        assert_eq!(back.vcpu_states[1].regs.rip, 0x2000);
        assert_eq!(back.devices, sample().devices);
        assert_eq!(back.layout, sample().layout);
    }

    #[test]
    fn a_vcpu_count_that_disagrees_with_the_states_is_refused() {
        let mut state = sample();
        state.vcpus = 3;
        let err = SnapshotState::decode(&state.encode()).unwrap_err();
        assert!(err.to_string().contains("3-vCPU"), "{err}");
    }

    proptest! {
        /// Every truncation of a valid payload is an error that names a field (or trailing
        /// bytes), never a panic or a half-read state.
        #[test]
        fn truncations_are_named(cut in any::<prop::sample::Index>()) {
            let bytes = sample().encode();
            let cut = cut.index(bytes.len());
            let err = SnapshotState::decode(&bytes[..cut]).unwrap_err();
            prop_assert!(matches!(err, CodecError::Truncated { .. }), "{}", err);
        }

        /// Arbitrary payloads, and valid ones with arbitrary bytes overwritten, never panic the
        /// decoder (the envelope's CRC normally stops them earlier; this is the second line).
        #[test]
        fn arbitrary_payloads_never_panic(
            junk in proptest::collection::vec(any::<u8>(), 0..2048),
            at in any::<prop::sample::Index>(),
            patch in proptest::collection::vec(any::<u8>(), 1..16),
        ) {
            let _ = SnapshotState::decode(&junk);
            let mut bytes = sample().encode();
            let at = at.index(bytes.len());
            for (i, b) in patch.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = *b;
                }
            }
            if let Err(e) = SnapshotState::decode(&bytes) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
