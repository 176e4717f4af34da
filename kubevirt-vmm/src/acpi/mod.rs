//! ACPI tables the VMM writes for the guest: RSDP, XSDT, a hardware-reduced FADT with sleep
//! and reset registers, a MADT listing every vCPU's local APIC and the IOAPIC, MCFG for the
//! PCI ECAM window, and a DSDT with the PCI host bridge, COM1, `_S5_`, and a Generic Event
//! Device with a power button (`ged`).
//!
//! Tables are generated with the `acpi_tables` crate (`tables`) and laid out in the BIOS
//! area where a kernel scanning for the RSDP finds them ([`write_tables`]); the sleep and
//! reset registers are served by `power::AcpiPower`. The FADT also names the PM timer
//! (`pm_timer`), which the PIIX4 PM function serves (`crate::pci::piix`).

internal_mod!(dsdt);
internal_mod!(ged);
pub mod pm_timer;
internal_mod!(power);
internal_mod!(tables);

pub use ged::GedEvents;
pub use tables::{AcpiLayout, AcpiTables, write_tables};

/// Where the RSDP goes: the start of the BIOS read-only area, which Linux scans.
pub const RSDP_ADDR: u64 = 0x000e_0000;
/// End of the area the tables may use: 64 KiB, below the SMBIOS tables at 0xF0000
/// (`crate::smbios::SMBIOS_ENTRY_ADDR`).
pub const ACPI_AREA_END: u64 = 0x000f_0000;
/// OEM ID in every table header.
pub const OEM_ID: [u8; 6] = *b"KUBEVR";
/// OEM table ID in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"KVRSVMM ";

/// Errors writing tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit between the RSDP and the SMBIOS area.
    #[error("ACPI tables need {0} bytes, more than the 64 KiB at 0xE0000 reserved for them")]
    TooLarge(u64),
    /// Guest memory refused the write.
    #[error("writing ACPI tables to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}
