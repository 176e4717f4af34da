//! QEMU's firmware configuration device (`fw_cfg`), as SeaBIOS and OVMF read it: a selector
//! port, a data port, a DMA interface and a directory of named files.
//!
//! The guest writes a 16-bit key to the selector at [`FW_CFG_SELECTOR_PORT`] (0x510) and reads
//! the item byte by byte from [`FW_CFG_DATA_PORT`] (0x511), or hands the device the address of
//! a DMA descriptor through [`FW_CFG_DMA_PORT`] (0x514, 64-bit big-endian; the write of the
//! low half at 0x518 starts the transfer). Items are fixed keys (signature, interface ID,
//! UUID, RAM size, CPU counts, ...) and files listed in the directory at key 0x19 with keys from
//! 0x20 (`etc/e820`, `bootorder`, `etc/acpi/*`, `etc/table-loader`, `etc/smbios/*`, ...).
//! Everything is read-only: DMA writes fail with the error bit, as QEMU's do for read-only
//! items. Format as in QEMU's `docs/specs/fw_cfg.rst`.
//!
//! Files: `items` (the contents: [`FwCfgItems`]), `device` (the guest-facing protocol:
//! [`FwCfg`]), `loader` (the `etc/table-loader` commands that let firmware place ACPI tables).

internal_mod!(device);
internal_mod!(items);
internal_mod!(loader);

pub use device::FwCfg;
pub use items::{FwCfgError, FwCfgItems};
pub use loader::{LoaderZone, TableLoader};

/// Selector register (16-bit writes).
pub const FW_CFG_SELECTOR_PORT: u16 = 0x510;
/// Data register (8-bit reads; string I/O reads several bytes at once).
pub const FW_CFG_DATA_PORT: u16 = 0x511;
/// DMA address register: high 32 bits at 0x514, low 32 bits at 0x518 (big-endian).
pub const FW_CFG_DMA_PORT: u16 = 0x514;
/// Ports the device covers: 0x510-0x51b.
pub const FW_CFG_PORT_SPAN: u64 = 12;
/// Longest file name, terminating NUL included.
pub const FW_CFG_MAX_FILE_PATH: usize = 56;

/// Key of the signature item ("QEMU").
pub const FW_CFG_SIGNATURE: u16 = 0x00;
/// Key of the interface ID (bit 0: traditional interface, bit 1: DMA).
pub const FW_CFG_ID: u16 = 0x01;
/// Key of the system UUID (16 bytes).
pub const FW_CFG_UUID: u16 = 0x02;
/// Key of the RAM size (little-endian u64).
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
/// Key of "no graphics" (little-endian u16).
pub const FW_CFG_NOGRAPHIC: u16 = 0x04;
/// Key of the number of vCPUs at boot (little-endian u16).
pub const FW_CFG_NB_CPUS: u16 = 0x05;
/// Key of "show the boot menu" (little-endian u16).
pub const FW_CFG_BOOT_MENU: u16 = 0x0e;
/// Key of the maximum number of vCPUs (little-endian u16).
pub const FW_CFG_MAX_CPUS: u16 = 0x0f;
/// Key of the file directory.
pub const FW_CFG_FILE_DIR: u16 = 0x19;
/// Key of the first file.
pub const FW_CFG_FILE_FIRST: u16 = 0x20;
/// What reading the DMA register returns: "QEMU CFG".
pub const FW_CFG_DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;
