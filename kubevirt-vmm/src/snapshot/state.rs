//! The state file's payload: everything but guest RAM, in a fixed order.
//!
//! ```text
//! vCPU count (u32), memory size (u64), RAM layout (memory.rs),
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
        let layout = MemoryLayout::decode(&mut d)?;
        let machine = MachineState::decode(&mut d)?;
        let n = d.len(MAX_VCPUS, &field("vCPU state count"))?;
        if n as u64 != u64::from(vcpus) {
            return Err(CodecError::TooLong {
                what: format!("the vCPU states of a {vcpus}-vCPU VM"),
                len: n as u64,
                max: vcpus as usize,
            });
        }
        let vcpu_states = (0..n)
            .map(|i| VcpuState::decode(&mut d, i))
            .collect::<Result<_, _>>()?;
        let devices = decode_devices(&mut d)?;
        d.finish()?;
        Ok(SnapshotState {
            vcpus,
            memory_size,
            layout,
            machine,
            vcpu_states,
            devices,
        })
    }
}
