//! What a VM that boots firmware (SeaBIOS, OVMF) adds: fw_cfg with the machine's description
//! and boot order, the optional debug console, and the firmware's state that migrates and is
//! saved with snapshots (its image identity and UEFI variable store).

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK, VIRTIO_ID_NET};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::{Vm, VmError, pci};
use crate::boot::firmware::fwcfg::{FirmwareTablesError, MachineDescription, fw_cfg_items};
use crate::boot::firmware::{FirmwareMemory, FirmwareState};
use crate::boot::{BootError, FirmwareBoot};
use crate::bus::Bus;
use crate::devices::debugcon::{DEBUGCON_PORT, Debugcon};
use crate::devices::fw_cfg::{FW_CFG_PORT_SPAN, FW_CFG_SELECTOR_PORT, FwCfg, FwCfgItems};
use crate::memory::GuestMemoryMmap;

/// The OpenFirmware device path SeaBIOS and OVMF match a virtio device at `slot` by.
fn boot_device_path(device: &pci::PlacedDevice) -> String {
    match device.device_type {
        VIRTIO_ID_BLOCK => format!("/pci@i0cf8/scsi@{:x}/disk@0,0", device.slot),
        VIRTIO_ID_NET => format!("/pci@i0cf8/ethernet@{:x}", device.slot),
        other => format!("/pci@i0cf8/pci1af4,{:x}@{:x}", 0x1040 + other, device.slot),
    }
}

/// fw_cfg (with what the firmware needs to know and the configuration's `extra` files) and,
/// if asked, the debug console.
#[allow(clippy::too_many_arguments)]
pub(super) fn firmware_devices(
    boot: &FirmwareBoot,
    acpi: bool,
    smbios: Option<&crate::smbios::SmbiosInfo>,
    topology: &crate::arch::topology::CpuTopology,
    memory: &GuestMemoryMmap,
    placed: &[pci::PlacedDevice],
    extra: &[(String, Vec<u8>)],
    pio_bus: &mut Bus,
) -> Result<(), VmError> {
    let ram: Vec<(u64, u64)> = memory
        .iter()
        .map(|r| (r.start_addr().0, r.len()))
        .collect();
    let mut order = Vec::new();
    for &index in &boot.boot_order {
        let device = placed
            .get(index)
            .ok_or(VmError::BootOrder { index, devices: placed.len() })?;
        order.push(boot_device_path(device));
    }
    let reserved = if placed.is_empty() {
        Vec::new()
    } else {
        vec![(crate::pci::PCI_MMCONFIG_START, crate::pci::PCI_MMCONFIG_SIZE)]
    };
    let items = fw_cfg_items(&MachineDescription {
        ram: &ram,
        reserved: &reserved,
        topology,
        acpi,
        smbios,
        boot_order: &order,
    })
    .map_err(BootError::from)?;
    insert_fw_cfg(items, extra, memory, pio_bus)?;
    if let Some(path) = &boot.debug_log {
        let file = std::fs::File::create(path).map_err(|source| {
            VmError::Boot(BootError::ReadFile {
                what: "firmware debug log",
                path: path.clone(),
                source,
            })
        })?;
        pio_bus.insert(
            Arc::new(Mutex::new(Debugcon::new(Box::new(file)))),
            u64::from(DEBUGCON_PORT),
            1,
        )?;
    }
    Ok(())
}

/// A fw_cfg device of its own for a VM that boots no firmware but was given fw_cfg files
/// (`VmConfig::fw_cfg_files`): the fixed items every fw_cfg has, and the files.
pub(super) fn plain_fw_cfg(
    smbios: Option<&crate::smbios::SmbiosInfo>,
    vcpus: u8,
    memory: &GuestMemoryMmap,
    files: &[(String, Vec<u8>)],
    pio_bus: &mut Bus,
) -> Result<(), VmError> {
    let ram_size = memory.iter().map(|r| r.len()).sum();
    let uuid = smbios.and_then(|s| s.uuid).unwrap_or([0; 16]);
    let items = FwCfgItems::new(ram_size, u16::from(vcpus), uuid);
    insert_fw_cfg(items, files, memory, pio_bus)
}

/// Adds `extra` to `items` and puts the device serving them on the port bus.
fn insert_fw_cfg(
    mut items: FwCfgItems,
    extra: &[(String, Vec<u8>)],
    memory: &GuestMemoryMmap,
    pio_bus: &mut Bus,
) -> Result<(), VmError> {
    for (name, contents) in extra {
        items
            .add_file(name, contents.clone())
            .map_err(|e| BootError::from(FirmwareTablesError::from(e)))?;
    }
    pio_bus.insert(
        Arc::new(Mutex::new(FwCfg::new(&items, memory.clone()))),
        u64::from(FW_CFG_SELECTOR_PORT),
        FW_CFG_PORT_SPAN,
    )?;
    Ok(())
}

impl Vm {
    /// The firmware's migrating state (image identity, UEFI variable store); `None` for a VM
    /// that does not boot firmware. The vCPUs must be paused.
    pub(crate) fn firmware_state(&self) -> Option<FirmwareState> {
        self.firmware.as_ref().map(FirmwareMemory::save)
    }

    /// Puts the source's firmware state in place before the migrated VM first runs.
    pub(crate) fn load_firmware_state(
        &self,
        state: Option<&FirmwareState>,
    ) -> Result<(), String> {
        match (&self.firmware, state) {
            (None, None) => Ok(()),
            (Some(f), Some(s)) => f.load(s),
            (Some(_), None) => Err(
                "this VM boots firmware, the migrating one does not: use the source's boot configuration".into(),
            ),
            (None, Some(_)) => Err(
                "the VM saved or sent boots firmware, this one does not: use its boot configuration".into(),
            ),
        }
    }
}
