//! The [`PciDevice`] trait and the host bridge.

use super::config::{PciConfiguration, PciIds};
use crate::bus::DeviceStateError;

/// A PCI function: a configuration space plus memory BARs. It knows its registers, not KVM.
///
/// Configuration accesses go through [`PciDevice::config`]/[`PciDevice::config_mut`] unless
/// a device overrides [`PciDevice::read_config_register`]/[`PciDevice::write_config_register`]
/// (to react to a write, e.g. MSI-X enable). BAR accesses arrive with the BAR index and the
/// offset inside it, wherever the guest placed the BAR.
pub trait PciDevice: Send {
    /// The configuration space.
    fn config(&self) -> &PciConfiguration;
    /// The configuration space, mutably (the VMM assigns BAR addresses through it).
    fn config_mut(&mut self) -> &mut PciConfiguration;

    /// A guest read of dword register `reg`.
    fn read_config_register(&mut self, reg: usize) -> u32 {
        self.config().read_reg(reg)
    }

    /// A guest write of `data` at byte `offset` of dword register `reg`.
    fn write_config_register(&mut self, reg: usize, offset: u64, data: &[u8]) {
        self.config_mut().write_reg(reg, offset, data);
    }

    /// A guest read of `data.len()` bytes at `offset` in BAR `bar`.
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// A guest write at `offset` in BAR `bar`.
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]);

    /// A guest port read at `port` outside every fixed device's range: a function that
    /// decodes the port (a chipset register block the guest placed) fills `data` and returns
    /// true. Default: not decoded.
    fn read_io(&mut self, port: u64, data: &mut [u8]) -> bool {
        let _ = (port, data);
        false
    }

    /// A guest port write, as [`PciDevice::read_io`].
    fn write_io(&mut self, port: u64, data: &[u8]) -> bool {
        let _ = (port, data);
        false
    }

    /// The function's state for a snapshot (the vCPUs are parked); a function with workers
    /// stops them until [`PciDevice::resume`]. Default: refused, so that a VM holding a
    /// function that cannot save its state is not snapshotted wrong.
    fn save_state(&mut self) -> Result<Vec<u8>, DeviceStateError> {
        Err(DeviceStateError::Unsupported(
            "this PCI function cannot save its state",
        ))
    }

    /// Puts back what [`PciDevice::save_state`] returned, before the vCPUs first run.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        let _ = state;
        Err(DeviceStateError::Unsupported(
            "this PCI function cannot restore a state",
        ))
    }

    /// The snapshot is written (or failed): carry on after [`PciDevice::save_state`].
    fn resume(&mut self) {}
}

/// [`PciDevice::save_state`] of a function whose only state is its configuration space.
pub fn save_config_only(config: &PciConfiguration) -> Vec<u8> {
    let mut e = crate::snapshot::codec::Encoder::new();
    config.save(&mut e);
    e.finish()
}

/// [`PciDevice::restore_state`] of a function whose only state is its configuration space.
pub fn restore_config_only(
    config: &mut PciConfiguration,
    state: &[u8],
) -> Result<(), DeviceStateError> {
    let mut d = crate::snapshot::codec::Decoder::new(state);
    config
        .restore(&mut d)
        .and_then(|()| d.finish())
        .map_err(|e| DeviceStateError::Invalid(e.to_string()))
}

/// The host bridge at 00:00.0 (class 06/00): what operating systems expect to find first.
///
/// It is QEMU's i440FX (8086:1237): firmware picks its chipset code by this ID, and OVMF
/// knows only i440FX and Q35 (then uses the PIIX4 PM timer at 00:01.3, `super::piix`). Its PAM
/// registers (0x59-0x5F, which map the BIOS area 0xC0000-0xFFFFF to ROM or RAM) are storage
/// that reads "RAM, read/write" at first: that area is always RAM here, so SeaBIOS finds its
/// shadow already in RAM and does not copy itself.
#[derive(Debug)]
pub struct HostBridge {
    config: PciConfiguration,
}

/// The host bridge's IDs (Intel 440FX, as QEMU's `pc` machine).
pub const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor: 0x8086,
    device: 0x1237,
    revision: 2,
    class: 0x06_00_00,
    subsystem_vendor: 0x1af4,
    subsystem: 0x1100,
};

/// PAM0 (0x59) = 0x30 (0xF0000-0xFFFFF read/write RAM), PAM1-6 (0x5A-0x5F) = 0x33.
const PAM_REGS: [(usize, u32); 2] = [(0x58 / 4, 0x3333_3000), (0x5c / 4, 0x3333_3333)];

impl HostBridge {
    /// A host bridge with no BARs.
    pub fn new() -> Self {
        let mut config = PciConfiguration::new(HOST_BRIDGE_IDS);
        for (reg, value) in PAM_REGS {
            config.init_reg(reg, value, if reg == 0x58 / 4 { 0xffff_ff00 } else { u32::MAX });
        }
        HostBridge { config }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfiguration {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
    fn save_state(&mut self) -> Result<Vec<u8>, DeviceStateError> {
        Ok(save_config_only(&self.config))
    }
    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        restore_config_only(&mut self.config, state)
    }
}
