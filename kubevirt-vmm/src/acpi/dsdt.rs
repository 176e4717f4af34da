//! The DSDT's AML: the PCI host bridge with its resources, the motherboard resources holding
//! ECAM, COM1, `_S5_`, and the Generic Event Device with its power button ([`super::ged`]).

use acpi_tables::Aml;
use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, IO, Interrupt, Memory32Fixed, Name,
    Package, ResourceTemplate,
};

use super::power::S5_SLP_TYP;
use crate::pci::{
    PCI_MMCONFIG_SIZE, PCI_MMCONFIG_START, PCI_MMIO_HIGH_WINDOW_SIZE, PCI_MMIO_HIGH_WINDOW_START,
    PCI_MMIO_WINDOW_SIZE, PCI_MMIO_WINDOW_START,
};

/// The AML body of the DSDT (without the table header).
pub fn dsdt_aml() -> Vec<u8> {
    let mut aml = Vec::new();

    let window_end = (PCI_MMIO_WINDOW_START + PCI_MMIO_WINDOW_SIZE - 1) as u32;
    let buses = AddressSpace::new_bus_number(0u16, 0u16);
    let config_ports = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = AddressSpace::new_io(0u16, 0x0cf7u16, None);
    let io_high = AddressSpace::new_io(0x0d00u16, 0xffffu16, None);
    let mmio = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO_WINDOW_START as u32,
        window_end,
        None,
    );
    let mmio_high = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO_HIGH_WINDOW_START as u32,
        (PCI_MMIO_HIGH_WINDOW_START + PCI_MMIO_HIGH_WINDOW_SIZE - 1) as u32,
        None,
    );
    let pci_crs = ResourceTemplate::new(vec![
        &buses,
        &config_ports,
        &io_low,
        &io_high,
        &mmio,
        &mmio_high,
    ]);
    let (hid, cid) = (EISAName::new("PNP0A08"), EISAName::new("PNP0A03"));
    let (hid_n, cid_n) = (
        Name::new("_HID".into(), &hid),
        Name::new("_CID".into(), &cid),
    );
    let adr = Name::new("_ADR".into(), &0u32);
    let seg = Name::new("_SEG".into(), &0u16);
    let uid = Name::new("_UID".into(), &0u8);
    let bbn = Name::new("_BBN".into(), &0u8);
    let crs = Name::new("_CRS".into(), &pci_crs);
    Device::new(
        "_SB_.PCI0".into(),
        vec![&hid_n, &cid_n, &adr, &seg, &uid, &bbn, &crs],
    )
    .to_aml_bytes(&mut aml);

    // ECAM must be reserved by a motherboard resource or Linux ignores MMCONFIG.
    let ecam = Memory32Fixed::new(false, PCI_MMCONFIG_START as u32, PCI_MMCONFIG_SIZE as u32);
    let mbrd_crs = ResourceTemplate::new(vec![&ecam]);
    let mbrd_hid = EISAName::new("PNP0C02");
    let mbrd_hid_n = Name::new("_HID".into(), &mbrd_hid);
    let mbrd_crs_n = Name::new("_CRS".into(), &mbrd_crs);
    Device::new("_SB_.MBRD".into(), vec![&mbrd_hid_n, &uid, &mbrd_crs_n]).to_aml_bytes(&mut aml);

    let com1_io = IO::new(0x3f8, 0x3f8, 0, 8);
    let com1_irq = Interrupt::new(true, true, false, false, 4);
    let com1_crs = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1_hid = EISAName::new("PNP0501");
    let com1_hid_n = Name::new("_HID".into(), &com1_hid);
    let com1_crs_n = Name::new("_CRS".into(), &com1_crs);
    Device::new("_SB_.COM1".into(), vec![&com1_hid_n, &uid, &com1_crs_n]).to_aml_bytes(&mut aml);

    let s5 = u32::from(S5_SLP_TYP);
    let zero = 0u32;
    let s5_package = Package::new(vec![&s5, &s5, &zero, &zero]);
    Name::new("_S5_".into(), &s5_package).to_aml_bytes(&mut aml);

    super::ged::ged_aml(&mut aml);
    aml
}
