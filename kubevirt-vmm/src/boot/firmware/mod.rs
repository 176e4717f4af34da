//! Booting through firmware, as QEMU does: SeaBIOS (legacy BIOS) or OVMF (UEFI) mapped just
//! below 4 GiB, the vCPUs left in their reset state (real mode at the reset vector
//! 0xFFFFFFF0), and the machine described to the firmware through `fw_cfg`
//! (`crate::devices::fw_cfg`): memory map, boot order, ACPI tables (through the table
//! loader), SMBIOS, the serial console. The firmware then enumerates PCI, finds the disks and
//! boots the first bootable one.
//!
//! - [`Firmware::Bios`]: a SeaBIOS image (Debian's `bios-256k.bin`) as read-only memory at the
//!   top of the 32-bit space, its last 256 KiB also at 0xC0000-0xFFFFF (the legacy BIOS area,
//!   plain RAM here: the state SeaBIOS reaches on QEMU once it has unlocked the shadow RAM).
//! - [`Firmware::Uefi`]: OVMF's code (read-only) with a per-VM copy of its variable store
//!   mapped writable just below it, as QEMU's two pflash devices.
//!
//! Files: `memory` (the firmware's memory slots), `fwcfg` (what fw_cfg tells the firmware).

internal_mod!(fwcfg);
internal_mod!(memory);

use std::path::PathBuf;

pub use memory::{FirmwareMemory, FirmwareState};

/// Where Debian's `seabios` package puts SeaBIOS.
pub const SEABIOS_PATH: &str = "/usr/share/seabios/bios-256k.bin";
/// Where Debian's `ovmf` package puts OVMF's code (4 MiB flash layout, no secure boot).
pub const OVMF_CODE_PATH: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Where Debian's `ovmf` package puts OVMF's empty variable store (copy it per VM).
pub const OVMF_VARS_PATH: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Which firmware, from which files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// A legacy BIOS image (SeaBIOS), 64 KiB to 16 MiB, a multiple of 64 KiB.
    Bios {
        /// The image.
        image: PathBuf,
    },
    /// UEFI (OVMF): code and the VM's own variable store, written in place (give each VM a
    /// copy of the template, e.g. [`OVMF_VARS_PATH`]).
    Uefi {
        /// The code volume.
        code: PathBuf,
        /// The VM's variable store.
        vars: PathBuf,
    },
}

/// A firmware boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareBoot {
    /// The firmware.
    pub firmware: Firmware,
    /// Boot order: indices into the VM's virtio devices (in the order they were added to the
    /// `VmBuilder`), first choice first; becomes fw_cfg's `bootorder`. Empty: the firmware's
    /// own order.
    pub boot_order: Vec<usize>,
    /// Where the firmware's debug log (port 0x402) goes; `None`: no debug console.
    pub debug_log: Option<PathBuf>,
}

impl FirmwareBoot {
    /// SeaBIOS from [`SEABIOS_PATH`].
    pub fn seabios() -> Self {
        FirmwareBoot {
            firmware: Firmware::Bios {
                image: SEABIOS_PATH.into(),
            },
            boot_order: Vec::new(),
            debug_log: None,
        }
    }

    /// OVMF from [`OVMF_CODE_PATH`] with the variable store `vars` (the VM's own copy).
    pub fn ovmf(vars: impl Into<PathBuf>) -> Self {
        FirmwareBoot {
            firmware: Firmware::Uefi {
                code: OVMF_CODE_PATH.into(),
                vars: vars.into(),
            },
            boot_order: Vec::new(),
            debug_log: None,
        }
    }

    /// Boots the virtio devices at these indices, in this order.
    pub fn with_boot_order(mut self, order: Vec<usize>) -> Self {
        self.boot_order = order;
        self
    }

    /// Writes the firmware's debug log (port 0x402) to `path`.
    pub fn with_debug_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.debug_log = Some(path.into());
        self
    }
}
