//! What fw_cfg tells the firmware about the machine: `etc/e820`, `bootorder`, the ACPI tables
//! with the `etc/table-loader` script that places them, SMBIOS (a 2.1 anchor, which SeaBIOS
//! and OVMF both take, over the VMM's structure table) and `etc/sercon-port`.

use crate::acpi::AcpiTables;
use crate::arch::topology::CpuTopology;
use crate::devices::fw_cfg::{FwCfgError, FwCfgItems, LoaderZone, TableLoader};
use crate::devices::serial::COM1_PORT;
use crate::smbios::{SmbiosError, SmbiosInfo};

/// `e820` entry types.
pub const E820_RAM: u32 = 1;
/// Reserved memory.
pub const E820_RESERVED: u32 = 2;

const RSDP_FILE: &str = "etc/acpi/rsdp";
const TABLES_FILE: &str = "etc/acpi/tables";

/// Why the firmware's fw_cfg contents cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareTablesError {
    /// A file could not be added.
    #[error("fw_cfg: {0}")]
    FwCfg(#[from] FwCfgError),
    /// The SMBIOS strings are invalid.
    #[error("SMBIOS: {0}")]
    Smbios(#[from] SmbiosError),
}

/// The machine as the firmware should see it.
#[derive(Debug)]
pub struct MachineDescription<'a> {
    /// RAM ranges `(start, length)`.
    pub ram: &'a [(u64, u64)],
    /// Reserved ranges `(start, length)` (the PCI ECAM window).
    pub reserved: &'a [(u64, u64)],
    /// The CPU topology.
    pub topology: &'a CpuTopology,
    /// Give ACPI tables.
    pub acpi: bool,
    /// SMBIOS contents, if any.
    pub smbios: Option<&'a SmbiosInfo>,
    /// OpenFirmware device paths to boot from, first choice first.
    pub boot_order: &'a [String],
}

/// The fw_cfg items and files for `machine`.
///
/// # Errors
/// [`FirmwareTablesError`] when SMBIOS strings are invalid.
pub fn fw_cfg_items(machine: &MachineDescription<'_>) -> Result<FwCfgItems, FirmwareTablesError> {
    let ram_size: u64 = machine.ram.iter().map(|r| r.1).sum();
    let uuid = machine.smbios.and_then(|s| s.uuid).unwrap_or([0; 16]);
    let mut items = FwCfgItems::new(ram_size, u16::from(machine.topology.vcpus()), uuid);
    items.add_file("etc/e820", e820(machine.ram, machine.reserved))?;
    if !machine.boot_order.is_empty() {
        let mut order = machine.boot_order.join("\n").into_bytes();
        order.push(0);
        items.add_file("bootorder", order)?;
    }
    items.add_file("etc/sercon-port", COM1_PORT.to_le_bytes().to_vec())?;
    if machine.acpi {
        let (rsdp, tables, loader) = acpi_files(machine.topology);
        items.add_file(RSDP_FILE, rsdp)?;
        items.add_file(TABLES_FILE, tables)?;
        items.add_file("etc/table-loader", loader)?;
    }
    if let Some(info) = machine.smbios {
        let table = info.table(machine.topology)?;
        items.add_file("etc/smbios/smbios-anchor", smbios21_anchor(&table).to_vec())?;
        items.add_file("etc/smbios/smbios-tables", table)?;
    }
    Ok(items)
}

/// `etc/e820`: 20-byte entries (le64 address, le64 length, le32 type).
pub fn e820(ram: &[(u64, u64)], reserved: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    let ram = ram.iter().map(|r| (r, E820_RAM));
    let reserved = reserved.iter().map(|r| (r, E820_RESERVED));
    for (&(addr, len), kind) in ram.chain(reserved) {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
    }
    out
}

fn get(b: &[u8], at: usize, size: usize) -> u64 {
    let mut v = [0u8; 8];
    v[..size].copy_from_slice(&b[at..at + size]);
    u64::from_le_bytes(v)
}

fn put(b: &mut [u8], at: usize, size: usize, value: u64) {
    b[at..at + size].copy_from_slice(&value.to_le_bytes()[..size]);
}

/// The VMM's ACPI tables as QEMU hands them to firmware: `etc/acpi/rsdp`, `etc/acpi/tables`
/// (every table, with pointers made relative to the file's start) and the loader script that
/// allocates both, turns the pointers into addresses and fixes the checksums.
pub fn acpi_files(topology: &CpuTopology) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (t, l) = AcpiTables::build(topology);
    let base = l.xsdt;
    let mut tables = vec![0u8; (l.end - base) as usize];
    let placed = [
        (&t.xsdt, l.xsdt),
        (&t.fadt, l.fadt),
        (&t.dsdt, l.dsdt),
        (&t.madt, l.madt),
        (&t.mcfg, l.mcfg),
    ];
    for (bytes, addr) in placed {
        let at = (addr - base) as usize;
        tables[at..at + bytes.len()].copy_from_slice(bytes);
    }
    let mut loader = TableLoader::default();
    loader.allocate(RSDP_FILE, 16, LoaderZone::FSeg);
    loader.allocate(TABLES_FILE, 64, LoaderZone::High);
    let rebase = |file: &str, b: &mut [u8], at: usize, size: usize, loader: &mut TableLoader| {
        let v = get(b, at, size);
        if v != 0 {
            put(b, at, size, v - base);
            loader.add_pointer(file, TABLES_FILE, at as u32, size as u8);
        }
    };
    // XSDT entries, then FADT's FIRMWARE_CTRL, DSDT, X_FIRMWARE_CTRL and X_DSDT.
    let xsdt = (l.xsdt - base) as usize;
    for i in 0..(t.xsdt.len() - 36) / 8 {
        rebase(TABLES_FILE, &mut tables, xsdt + 36 + 8 * i, 8, &mut loader);
    }
    let fadt = (l.fadt - base) as usize;
    // The 32-bit DSDT pointer too (QEMU sets both): SeaBIOS finds the DSDT only through it,
    // and reads the DSDT to learn there is no PS/2 keyboard to probe.
    if get(&tables, fadt + 40, 4) == 0 {
        put(&mut tables, fadt + 40, 4, l.dsdt);
    }
    for (off, size) in [(36, 4), (40, 4), (132, 8), (140, 8)] {
        if off + size <= t.fadt.len() {
            rebase(TABLES_FILE, &mut tables, fadt + off, size, &mut loader);
        }
    }
    let mut rsdp = t.rsdp.clone();
    rebase(RSDP_FILE, &mut rsdp, 16, 4, &mut loader);
    rebase(RSDP_FILE, &mut rsdp, 24, 8, &mut loader);
    for (bytes, addr) in placed {
        let at = (addr - base) as u32;
        loader.add_checksum(TABLES_FILE, at + 9, at, bytes.len() as u32);
    }
    loader.add_checksum(RSDP_FILE, 8, 0, 20);
    loader.add_checksum(RSDP_FILE, 32, 0, rsdp.len() as u32);
    (rsdp, tables, loader.into_bytes())
}

/// An SMBIOS 2.1 (32-bit) entry point for `table`, its table address left 0 for the firmware
/// to fill in.
pub fn smbios21_anchor(table: &[u8]) -> [u8; 31] {
    let (mut count, mut max, mut at) = (0u16, 0u16, 0usize);
    while at + 4 <= table.len() {
        let start = at;
        at += usize::from(table[at + 1]);
        // Strings end with a double NUL.
        while at + 1 < table.len() && (table[at] != 0 || table[at + 1] != 0) {
            at += 1;
        }
        at += 2;
        count += 1;
        max = max.max((at.min(table.len()) - start) as u16);
    }
    let mut ep = [0u8; 31];
    ep[..4].copy_from_slice(b"_SM_");
    ep[5] = 31;
    ep[6] = 2;
    ep[7] = 8;
    ep[8..10].copy_from_slice(&max.to_le_bytes());
    ep[16..21].copy_from_slice(b"_DMI_");
    ep[22..24].copy_from_slice(&(table.len() as u16).to_le_bytes());
    ep[28..30].copy_from_slice(&count.to_le_bytes());
    ep[30] = 0x28;
    let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
    ep[21] = 0u8.wrapping_sub(sum(&ep[16..31]));
    ep[4] = 0u8.wrapping_sub(sum(&ep));
    ep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the loader script as firmware would, placing the RSDP at `rsdp_at` and the tables at
    /// `tables_at`; returns both patched.
    fn run_loader(rsdp: &[u8], tables: &[u8], script: &[u8], rsdp_at: u64, tables_at: u64) -> (Vec<u8>, Vec<u8>) {
        let mut files = [(RSDP_FILE, rsdp.to_vec(), rsdp_at), (TABLES_FILE, tables.to_vec(), tables_at)];
        let name = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap();
            String::from_utf8(b[..end].to_vec()).unwrap()
        };
        let idx = |n: &str| if n == RSDP_FILE { 0 } else { 1 };
        for c in script.chunks(128) {
            let kind = u32::from_le_bytes(c[..4].try_into().unwrap());
            match kind {
                1 => {}
                2 => {
                    let dest = idx(&name(&c[4..60]));
                    let src = idx(&name(&c[60..116]));
                    let off = u32::from_le_bytes(c[116..120].try_into().unwrap()) as usize;
                    let size = usize::from(c[120]);
                    let v = get(&files[dest].1, off, size) + files[src].2;
                    put(&mut files[dest].1, off, size, v);
                }
                3 => {
                    let f = idx(&name(&c[4..60]));
                    let off = u32::from_le_bytes(c[60..64].try_into().unwrap()) as usize;
                    let start = u32::from_le_bytes(c[64..68].try_into().unwrap()) as usize;
                    let len = u32::from_le_bytes(c[68..72].try_into().unwrap()) as usize;
                    let s = files[f].1[start..start + len].iter().fold(0u8, |a, x| a.wrapping_add(*x));
                    files[f].1[off] = files[f].1[off].wrapping_sub(s);
                }
                other => panic!("unknown command {other}"),
            }
        }
        let [(_, r, _), (_, t, _)] = files;
        (r, t)
    }

    #[test]
    fn the_loader_script_links_the_tables_wherever_firmware_puts_them() {
        let topo = CpuTopology::flat(2);
        let (rsdp, tables, script) = acpi_files(&topo);
        let (rsdp_at, tables_at) = (0xf5a30, 0x3ffd_0000u64);
        let (r, t) = run_loader(&rsdp, &tables, &script, rsdp_at, tables_at);
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        assert_eq!(sum(&r[..20]), 0);
        assert_eq!(sum(&r), 0);
        let xsdt_addr = get(&r, 24, 8);
        assert_eq!(xsdt_addr, tables_at, "the XSDT is first in the tables file");
        let at = |addr: u64| (addr - tables_at) as usize;
        let table = |addr: u64| {
            let o = at(addr);
            let len = get(&t, o + 4, 4) as usize;
            &t[o..o + len]
        };
        let xsdt = table(xsdt_addr);
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(sum(xsdt), 0);
        let mut sigs = Vec::new();
        for i in 0..(xsdt.len() - 36) / 8 {
            let entry = table(get(xsdt, 36 + 8 * i, 8));
            assert_eq!(sum(entry), 0);
            sigs.push(String::from_utf8(entry[..4].to_vec()).unwrap());
            if &entry[..4] == b"FACP" {
                let dsdt = table(get(entry, 140, 8));
                assert_eq!(&dsdt[..4], b"DSDT");
                assert_eq!(sum(dsdt), 0);
                assert_eq!(get(entry, 40, 4), get(entry, 140, 8), "DSDT = X_DSDT");
            }
        }
        assert_eq!(sigs, ["FACP", "APIC", "MCFG"]);
    }

    #[test]
    fn the_smbios_anchor_counts_the_structures_and_checksums() {
        let info = SmbiosInfo::default().with_serial("abc");
        let table = info.table(&CpuTopology::flat(1)).unwrap();
        let ep = smbios21_anchor(&table);
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        assert_eq!(sum(&ep), 0);
        assert_eq!(sum(&ep[16..]), 0);
        assert_eq!(usize::from(u16::from_le_bytes([ep[22], ep[23]])), table.len());
        // Types 0, 1, 3, 4 and 127.
        assert_eq!(u16::from_le_bytes([ep[28], ep[29]]), 5);
    }

    #[test]
    fn items_carry_the_memory_map_boot_order_and_console() {
        let topo = CpuTopology::flat(1);
        let order = vec!["/pci@i0cf8/scsi@1/disk@0,0".to_string()];
        let info = SmbiosInfo::default();
        let items = fw_cfg_items(&MachineDescription {
            ram: &[(0, 64 << 20)],
            reserved: &[(0xe000_0000, 1 << 20)],
            topology: &topo,
            acpi: true,
            smbios: Some(&info),
            boot_order: &order,
        })
        .unwrap();
        let e820 = items.file("etc/e820").unwrap();
        assert_eq!(e820.len(), 40);
        assert_eq!(get(e820, 8, 8), 64 << 20);
        assert_eq!(get(e820, 36, 4), u64::from(E820_RESERVED));
        assert_eq!(items.file("bootorder").unwrap(), b"/pci@i0cf8/scsi@1/disk@0,0\0");
        assert_eq!(items.file("etc/sercon-port").unwrap(), [0xf8, 0x03]);
        for f in ["etc/acpi/rsdp", "etc/acpi/tables", "etc/table-loader", "etc/smbios/smbios-anchor"] {
            assert!(items.file(f).is_some(), "{f}");
        }
    }
}
