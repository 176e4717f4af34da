//! PCI: a root complex with configuration access through ports 0xCF8/0xCFC and ECAM, the
//! [`PciDevice`] trait, and BARs placed by the VMM in [`PCI_MMIO_WINDOW_START`]'s window.
//!
//! Bus 0 only: the i440FX host bridge at 00:00.0, the PIIX chipset functions at slot 1
//! (`piix`: the ISA bridge at 00:01.0 and the PM function with the ACPI PM timer at
//! 00:01.3), then the VMM's devices, function 0 each. Absent functions and buses read
//! all-ones, which is how an operating system learns they are absent. The VMM assigns BAR
//! addresses as firmware would ([`PciRootBuilder::add`]); a guest may still move a BAR, and
//! [`PciBarWindow`] routes accesses to wherever each BAR is now; [`PciIoWindow`] does the same
//! for port I/O a function decodes (the PM block at the base the guest programmed).

pub mod config;
pub mod device;
pub mod msix;
pub mod piix;
pub mod root;

pub use config::{BarRequest, PciConfiguration, PciIds};
pub use device::{HostBridge, PciDevice};
pub use root::{
    CONFIG_IO_PORT, CONFIG_IO_SPAN, PciBarWindow, PciConfigIo, PciConfigMmio, PciIoWindow,
    PciRoot, PciRootBuilder, SharedPciDevice,
};

/// ECAM (MMCONFIG) base: bus 0's configuration space, 1 MiB.
pub const PCI_MMCONFIG_START: u64 = 0xe000_0000;
/// ECAM size: one bus.
pub const PCI_MMCONFIG_SIZE: u64 = root::ECAM_BUS_SIZE;
/// Where the VMM places BARs (the upper half of the MMIO device window).
pub const PCI_MMIO_WINDOW_START: u64 = 0xd800_0000;
/// Size of the BAR window.
pub const PCI_MMIO_WINDOW_SIZE: u64 = 0x0800_0000;
/// A second window for BARs, above ECAM up to the IOAPIC: where firmware (SeaBIOS, OVMF)
/// places BARs when it enumerates PCI itself (SeaBIOS: top-down from 0xFEC00000).
pub const PCI_MMIO_HIGH_WINDOW_START: u64 = PCI_MMCONFIG_START + PCI_MMCONFIG_SIZE;
/// Size of the second BAR window.
pub const PCI_MMIO_HIGH_WINDOW_SIZE: u64 =
    crate::arch::layout::IOAPIC_START - PCI_MMIO_HIGH_WINDOW_START;
// Nothing else the VMM maps may sit in the firmware's BAR window.
const _: () = assert!(
    crate::acpi::ged::GED_MMIO_ADDR >= PCI_MMIO_HIGH_WINDOW_START + PCI_MMIO_HIGH_WINDOW_SIZE
);

/// Errors declaring BARs and capabilities or placing devices.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// The BAR index is taken, out of range, or a 64-bit BAR would not fit.
    #[error("BAR {index} is already used or out of range (BARs 0-5, a 64-bit BAR takes two)")]
    BarSlot {
        /// The BAR.
        index: usize,
    },
    /// The BAR size is not a power of two of at least 16 bytes (at most 2 GiB for 32-bit).
    #[error("BAR {index}: size {size:#x} must be a power of two >= 16 (<= 2 GiB for 32-bit BARs)")]
    BarSize {
        /// The BAR.
        index: usize,
        /// Its size.
        size: u64,
    },
    /// No BAR has that index.
    #[error("BAR {index} is not declared")]
    NoSuchBar {
        /// The BAR.
        index: usize,
    },
    /// The address is not aligned to the BAR's size or does not fit its width.
    #[error("BAR {index} (size {size:#x}) cannot be placed at {addr:#x}")]
    BarAddress {
        /// The BAR.
        index: usize,
        /// The address.
        addr: u64,
        /// Its size.
        size: u64,
    },
    /// The capability does not fit in the 256-byte configuration space.
    #[error("a {len}-byte capability does not fit in the configuration space")]
    CapabilitySpace {
        /// Its length.
        len: usize,
    },
    /// All 32 slots of bus 0 are taken.
    #[error("PCI bus 0 is full (32 slots, 2 taken by the chipset)")]
    BusFull,
    /// The BAR window has no room left.
    #[error("the PCI MMIO window has no room for a {size:#x}-byte BAR")]
    WindowFull {
        /// The BAR size.
        size: u64,
    },
}
