//! Generating the tables and placing them in guest memory.

use acpi_tables::Aml;
use acpi_tables::fadt::{FADT, FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use vm_memory::{Bytes, GuestAddress};
use crate::memory::GuestMemoryMmap;

use super::power::{RESET_PORT, RESET_VALUE, SLEEP_CONTROL_PORT};
use super::{ACPI_AREA_END, AcpiError, OEM_ID, OEM_TABLE_ID, RSDP_ADDR};
use crate::arch::layout::{IOAPIC_START, LAPIC_START};
use crate::arch::topology::CpuTopology;
use crate::pci::PCI_MMCONFIG_START;
use crate::pci::piix::{PM_BASE, PM_TIMER_OFFSET};

/// The tables, each as the bytes the guest sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// Root pointer (revision 2).
    pub rsdp: Vec<u8>,
    /// Extended system description table: FADT, MADT, MCFG.
    pub xsdt: Vec<u8>,
    /// Fixed ACPI description table (hardware-reduced).
    pub fadt: Vec<u8>,
    /// Multiple APIC description table.
    pub madt: Vec<u8>,
    /// PCI ECAM table.
    pub mcfg: Vec<u8>,
    /// Differentiated system description table.
    pub dsdt: Vec<u8>,
}

/// Where each table lives in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiLayout {
    /// RSDP.
    pub rsdp: u64,
    /// XSDT.
    pub xsdt: u64,
    /// FADT.
    pub fadt: u64,
    /// DSDT.
    pub dsdt: u64,
    /// MADT.
    pub madt: u64,
    /// MCFG.
    pub mcfg: u64,
    /// First byte past the last table.
    pub end: u64,
}

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

fn io_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

fn align16(v: u64) -> u64 {
    v.next_multiple_of(16)
}

impl AcpiTables {
    /// The tables for a VM with this CPU topology (one local APIC per vCPU, with the
    /// topology's APIC IDs), placed from [`RSDP_ADDR`].
    pub fn build(topology: &CpuTopology) -> (AcpiTables, AcpiLayout) {
        let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, 1);
        dsdt.append_slice(&super::dsdt::dsdt_aml());
        let dsdt = dsdt.as_slice().to_vec();

        let mut madt = MADT::new(
            OEM_ID,
            OEM_TABLE_ID,
            1,
            LocalInterruptController::Address(LAPIC_START as u32),
        );
        for cpu in 0..topology.vcpus() {
            madt.add_structure(ProcessorLocalApic::new(
                cpu,
                topology.apic_id(cpu),
                EnabledStatus::Enabled,
            ));
        }
        madt.add_structure(IoApic::new(0, IOAPIC_START as u32, 0));
        let madt = bytes(&madt);

        let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, 1);
        mcfg.add_ecam(PCI_MMCONFIG_START, 0, 0, 0);
        let mcfg = bytes(&mcfg);

        let xsdt_addr = align16(RSDP_ADDR + 36);
        let xsdt_len = 36 + 8 * 3;
        let fadt_addr = align16(xsdt_addr + xsdt_len);
        let dsdt_addr = align16(fadt_addr + FADT::len() as u64);
        let madt_addr = align16(dsdt_addr + dsdt.len() as u64);
        let mcfg_addr = align16(madt_addr + madt.len() as u64);
        let end = mcfg_addr + mcfg.len() as u64;

        let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, 1)
            .flag(Flags::HwReducedAcpi)
            .flag(Flags::ResetRegSup)
            .dsdt_64(dsdt_addr);
        fadt.reset_reg = io_register(RESET_PORT);
        fadt.reset_value = RESET_VALUE;
        fadt.sleep_control_reg = io_register(SLEEP_CONTROL_PORT);
        fadt.sleep_status_reg = io_register(SLEEP_CONTROL_PORT + 1);
        // The PIIX4 PM function's timer, at the base the VMM presets (firmware keeps it).
        let pm_timer = PM_BASE + PM_TIMER_OFFSET;
        fadt.pm_tmr_blk = u32::from(pm_timer).into();
        fadt.pm_tmr_len = 4;
        fadt.x_pm_tmr_blk = GAS::new(
            AddressSpace::SystemIo,
            32,
            0,
            AccessSize::DwordAccess,
            u64::from(pm_timer),
        );
        fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"KUBEVIRT").into();
        let fadt = bytes(&fadt.finalize());

        let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
        for addr in [fadt_addr, madt_addr, mcfg_addr] {
            xsdt.add_entry(addr);
        }
        let xsdt = bytes(&xsdt);
        debug_assert_eq!(xsdt.len() as u64, xsdt_len);
        let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));

        (
            AcpiTables {
                rsdp,
                xsdt,
                fadt,
                madt,
                mcfg,
                dsdt,
            },
            AcpiLayout {
                rsdp: RSDP_ADDR,
                xsdt: xsdt_addr,
                fadt: fadt_addr,
                dsdt: dsdt_addr,
                madt: madt_addr,
                mcfg: mcfg_addr,
                end,
            },
        )
    }
}

/// Writes the tables for `vcpus` vCPUs into guest memory; returns where they are (the RSDP
/// address goes into `boot_params.acpi_rsdp_addr` or PVH `rsdp_paddr`).
pub fn write_tables(
    mem: &GuestMemoryMmap,
    topology: &CpuTopology,
) -> Result<AcpiLayout, AcpiError> {
    let (t, l) = AcpiTables::build(topology);
    if l.end > ACPI_AREA_END {
        return Err(AcpiError::TooLarge(l.end - RSDP_ADDR));
    }
    for (bytes, addr) in [
        (&t.rsdp, l.rsdp),
        (&t.xsdt, l.xsdt),
        (&t.fadt, l.fadt),
        (&t.dsdt, l.dsdt),
        (&t.madt, l.madt),
        (&t.mcfg, l.mcfg),
    ] {
        mem.write_slice(bytes, GuestAddress(addr))?;
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(t: &[u8]) -> bool {
        t.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn u32_at(t: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(t[o..o + 4].try_into().unwrap())
    }

    fn u64_at(t: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(t[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn tables_link_up_and_checksum() {
        let (t, l) = AcpiTables::build(&CpuTopology::flat(2));
        assert_eq!(&t.rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&t.rsdp[..20]), "RSDP v1 checksum");
        assert!(checksum_ok(&t.rsdp), "RSDP extended checksum");
        assert_eq!(u64_at(&t.rsdp, 24), l.xsdt);
        for (table, sig) in [
            (&t.xsdt, b"XSDT"),
            (&t.fadt, b"FACP"),
            (&t.madt, b"APIC"),
            (&t.mcfg, b"MCFG"),
            (&t.dsdt, b"DSDT"),
        ] {
            assert_eq!(&table[..4], sig);
            assert_eq!(u32_at(table, 4) as usize, table.len(), "{sig:?} length");
            assert!(checksum_ok(table), "{sig:?} checksum");
        }
        assert_eq!(
            [
                u64_at(&t.xsdt, 36),
                u64_at(&t.xsdt, 44),
                u64_at(&t.xsdt, 52)
            ],
            [l.fadt, l.madt, l.mcfg]
        );
        // FADT: X_DSDT at 140, flags at 112 with HW_REDUCED_ACPI and RESET_REG_SUP.
        assert_eq!(u64_at(&t.fadt, 140), l.dsdt);
        let flags = u32_at(&t.fadt, 112);
        assert_ne!(flags & (1 << 20), 0);
        assert_ne!(flags & (1 << 10), 0);
        // PM_TMR_BLK (76) and its length (91), X_PM_TMR_BLK (208: I/O space, 32 bits) name
        // the PIIX4 timer; TMR_VAL_EXT (flag bit 8) is clear: 24 bits.
        assert_eq!(u32_at(&t.fadt, 76), 0xb008);
        assert_eq!(t.fadt[91], 4);
        assert_eq!(&t.fadt[208..212], &[1, 32, 0, 3]);
        assert_eq!(u64_at(&t.fadt, 212), 0xb008);
        assert_eq!(flags & (1 << 8), 0);
        // MADT: two local APICs (type 0) and one IOAPIC (type 1) after the 44-byte header.
        let mut kinds = Vec::new();
        let mut o = 44;
        while o < t.madt.len() {
            kinds.push(t.madt[o]);
            o += usize::from(t.madt[o + 1]);
        }
        assert_eq!(kinds, vec![0, 0, 1]);
        // MCFG: one allocation for bus 0 at the ECAM base.
        assert_eq!(u64_at(&t.mcfg, 44), PCI_MMCONFIG_START);
        assert!(t.dsdt.windows(4).any(|w| w == b"_S5_"));
        assert!(l.end <= ACPI_AREA_END);
    }

    #[test]
    fn many_vcpus_still_fit_and_are_all_listed() {
        let (t, l) = AcpiTables::build(&CpuTopology::flat(255));
        assert_eq!(t.madt.len(), 44 + 255 * 8 + 12);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        assert_eq!(write_tables(&mem, &CpuTopology::flat(255)).unwrap(), l);
        let sig: [u8; 8] = mem.read_obj(GuestAddress(RSDP_ADDR)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
    }
}
