//! SMBIOS (DMTF DSP0134 3.0) tables: how `spec.domain.firmware.uuid` and `serial` reach a
//! guest. A Linux guest reads them as `/sys/class/dmi/id/product_uuid` / `product_serial`,
//! `dmidecode` prints them.
//!
//! The VMM writes a 64-bit entry point (`_SM3_`) at [`SMBIOS_ENTRY_ADDR`], the start of the
//! BIOS area 0xF0000-0xFFFFF an OS scans on 16-byte boundaries, and the structure table
//! right after it at [`SMBIOS_TABLE_ADDR`]: type 0 (BIOS), type 1 (System, with the UUID and
//! serial), type 3 (Chassis), type 4 (Processor: one per socket, with its cores and threads, as
//! the CPUID topology says) and type 127 (End-of-Table). The ACPI tables stay below
//! 0xF0000 ([`crate::acpi::ACPI_AREA_END`]). Defaults ([`SmbiosInfo::default`]) are upstream
//! KubeVirt's: manufacturer "KubeVirt", product "None", family "KubeVirt".

pub mod structures;

use vm_memory::{Bytes, GuestAddress};
use crate::memory::GuestMemoryMmap;

use crate::arch::topology::CpuTopology;

use self::structures::{Structure, TYPE_BIOS, TYPE_CHASSIS, TYPE_END, TYPE_PROCESSOR, TYPE_SYSTEM};

/// Where the SMBIOS 3.0 entry point is written (16-byte aligned, in the scanned BIOS area).
pub const SMBIOS_ENTRY_ADDR: u64 = 0x000f_0000;
/// Where the structure table follows the entry point.
pub const SMBIOS_TABLE_ADDR: u64 = SMBIOS_ENTRY_ADDR + 0x20;
// The ACPI tables end where SMBIOS begins.
const _: () = assert!(SMBIOS_ENTRY_ADDR >= crate::acpi::ACPI_AREA_END);
/// End of the area the SMBIOS data may use (1 MiB).
pub const SMBIOS_AREA_END: u64 = 0x0010_0000;
/// Length of the SMBIOS 3.0 entry point structure.
pub const ENTRY_POINT_LEN: usize = 0x18;
/// The BIOS vendor string (type 0).
pub const BIOS_VENDOR: &str = "KubeVirt-rs";
/// The BIOS version string (type 0): this crate's version.
pub const BIOS_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The BIOS release date (type 0, mm/dd/yyyy as the specification asks).
pub const BIOS_RELEASE_DATE: &str = "11/28/2026";

/// Errors building or writing SMBIOS tables.
#[derive(Debug, thiserror::Error)]
pub enum SmbiosError {
    /// SMBIOS strings are NUL-terminated, so a NUL cannot be in one.
    #[error("SMBIOS {field} {value:?} contains a NUL byte, which SMBIOS strings cannot hold")]
    NulInString {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The table does not fit below 1 MiB.
    #[error(
        "the SMBIOS table is {0} bytes, more than the {max} the BIOS area holds: shorten the strings",
        max = SMBIOS_AREA_END - SMBIOS_TABLE_ADDR
    )]
    TooLarge(usize),
    /// Guest memory refused the write.
    #[error("writing SMBIOS tables to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// What the guest's SMBIOS says about the system. Empty strings are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmbiosInfo {
    /// System UUID (type 1) in RFC 4122 byte order, as it is printed (`uuid::Uuid::as_bytes`);
    /// written in SMBIOS order (first three fields little-endian). `None`: all zeros ("not
    /// set").
    pub uuid: Option<[u8; 16]>,
    /// System serial number (type 1), also the chassis serial (type 3).
    pub serial: Option<String>,
    /// System and chassis manufacturer. Default "KubeVirt".
    pub manufacturer: String,
    /// Product name. Default "None".
    pub product: String,
    /// System version. Default: none.
    pub version: Option<String>,
    /// SKU number. Default: none.
    pub sku: Option<String>,
    /// Family. Default "KubeVirt".
    pub family: String,
}

impl Default for SmbiosInfo {
    fn default() -> Self {
        SmbiosInfo {
            uuid: None,
            serial: None,
            manufacturer: "KubeVirt".into(),
            product: "None".into(),
            version: None,
            sku: None,
            family: "KubeVirt".into(),
        }
    }
}

impl SmbiosInfo {
    /// Sets the system UUID (RFC 4122 byte order).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = Some(uuid);
        self
    }

    /// Sets the system serial number.
    pub fn with_serial(mut self, serial: impl Into<String>) -> Self {
        self.serial = Some(serial.into());
        self
    }

    fn check(&self) -> Result<(), SmbiosError> {
        let fields = [
            ("serial", self.serial.as_deref()),
            ("manufacturer", Some(self.manufacturer.as_str())),
            ("product", Some(self.product.as_str())),
            ("version", self.version.as_deref()),
            ("sku", self.sku.as_deref()),
            ("family", Some(self.family.as_str())),
        ];
        for (field, value) in fields {
            if let Some(v) = value.filter(|v| v.contains('\0')) {
                return Err(SmbiosError::NulInString {
                    field,
                    value: v.into(),
                });
            }
        }
        Ok(())
    }

    /// The structure table for a VM with this CPU topology: types 0, 1, 3, one type 4 per
    /// socket, and 127.
    pub fn table(&self, topology: &CpuTopology) -> Result<Vec<u8>, SmbiosError> {
        self.check()?;
        let serial = self.serial.as_deref().unwrap_or("");
        let mut bios = Structure::new(TYPE_BIOS, 0x0000);
        bios.string(BIOS_VENDOR)
            .string(BIOS_VERSION)
            .u16(0xe800) // BIOS starting address segment
            .string(BIOS_RELEASE_DATE)
            .u8(0) // ROM size: 64 KiB
            .u64(1 << 3) // characteristics: "BIOS characteristics not supported"
            .u8(0)
            .u8(0x14) // extension byte 2: targeted content distribution, virtual machine
            .u8(0) // BIOS major release
            .u8(0) // BIOS minor release
            .u8(0xff) // no embedded controller
            .u8(0xff);
        let mut system = Structure::new(TYPE_SYSTEM, 0x0100);
        system
            .string(&self.manufacturer)
            .string(&self.product)
            .string(self.version.as_deref().unwrap_or(""))
            .string(serial)
            .bytes(&smbios_uuid(self.uuid.unwrap_or([0; 16])))
            .u8(0x06) // wake-up type: power switch
            .string(self.sku.as_deref().unwrap_or(""))
            .string(&self.family);
        let mut chassis = Structure::new(TYPE_CHASSIS, 0x0300);
        chassis
            .string(&self.manufacturer)
            .u8(0x01) // type: other
            .string("") // version
            .string(serial)
            .string("") // asset tag
            .u8(0x03) // boot-up state: safe
            .u8(0x03) // power supply state: safe
            .u8(0x03) // thermal state: safe
            .u8(0x02) // security status: unknown
            .u32(0) // OEM-defined
            .u8(0) // height: unspecified
            .u8(0) // power cords: unspecified
            .u8(0) // contained elements
            .u8(0) // contained element record length
            .string(""); // SKU
        let (cores, threads) = (
            topology.cores,
            topology.cores.saturating_mul(topology.threads),
        );
        let cpus = (0..topology.sockets).map(|socket| {
            let mut cpu = Structure::new(TYPE_PROCESSOR, 0x0400 + u16::from(socket));
            cpu.string(&format!("CPU {socket}")) // socket designation
                .u8(0x03) // central processor
                .u8(0xfe) // family: see family 2
                .string(&self.manufacturer)
                .u64(0) // processor ID: the guest has CPUID
                .string("") // version
                .u8(0) // voltage: unknown
                .u16(0) // external clock: unknown
                .u16(0) // max speed: unknown
                .u16(0) // current speed: unknown
                .u8(0x41) // status: socket populated, CPU enabled
                .u8(0x01) // upgrade: other
                .u16(0xffff) // no L1 cache information
                .u16(0xffff) // L2
                .u16(0xffff) // L3
                .string("") // serial
                .string("") // asset tag
                .string("") // part number
                .u8(cores) // cores
                .u8(cores) // cores enabled
                .u8(threads) // threads
                .u16(if topology.threads > 1 { 0x0014 } else { 0x0004 }) // 64-bit (+ multi-thread)
                .u16(0x0001) // family 2: other
                .u16(u16::from(cores))
                .u16(u16::from(cores))
                .u16(u16::from(threads));
            cpu
        });
        let mut table = Vec::new();
        let structures = [bios, system, chassis]
            .into_iter()
            .chain(cpus)
            .chain([Structure::new(TYPE_END, 0x7f00)]);
        for s in structures {
            table.extend_from_slice(&s.finish());
        }
        if table.len() as u64 > SMBIOS_AREA_END - SMBIOS_TABLE_ADDR {
            return Err(SmbiosError::TooLarge(table.len()));
        }
        Ok(table)
    }
}

/// The UUID in SMBIOS byte order: time-low, time-mid and time-hi-and-version little-endian.
pub fn smbios_uuid(uuid: [u8; 16]) -> [u8; 16] {
    let mut out = uuid;
    out[..4].reverse();
    out[4..6].reverse();
    out[6..8].reverse();
    out
}

/// The 64-bit (SMBIOS 3.0) entry point for a table of `table_len` bytes at `table_addr`.
pub fn entry_point(table_addr: u64, table_len: usize) -> [u8; ENTRY_POINT_LEN] {
    let mut ep = [0u8; ENTRY_POINT_LEN];
    ep[..5].copy_from_slice(b"_SM3_");
    ep[6] = ENTRY_POINT_LEN as u8;
    ep[7] = 3; // SMBIOS 3.0
    ep[8] = 0;
    ep[9] = 0; // docrev
    ep[10] = 1; // entry point revision: 3.0 entry point
    ep[12..16].copy_from_slice(&(table_len as u32).to_le_bytes());
    ep[16..24].copy_from_slice(&table_addr.to_le_bytes());
    let sum = ep.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    ep[5] = 0u8.wrapping_sub(sum);
    ep
}

/// The entry point and table as `dmidecode --dump-bin` writes them (entry point at offset 0,
/// table at offset 32, the entry point's table address patched to 32): feed it to
/// `dmidecode --from-dump`.
pub fn dump_bin(info: &SmbiosInfo, topology: &CpuTopology) -> Result<Vec<u8>, SmbiosError> {
    let table = info.table(topology)?;
    let mut out = vec![0u8; 32];
    out[..ENTRY_POINT_LEN].copy_from_slice(&entry_point(32, table.len()));
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the entry point at [`SMBIOS_ENTRY_ADDR`] and the table for `vcpus` vCPUs at
/// [`SMBIOS_TABLE_ADDR`].
pub fn write_smbios(
    mem: &GuestMemoryMmap,
    info: &SmbiosInfo,
    topology: &CpuTopology,
) -> Result<(), SmbiosError> {
    let table = info.table(topology)?;
    mem.write_slice(
        &entry_point(SMBIOS_TABLE_ADDR, table.len()),
        GuestAddress(SMBIOS_ENTRY_ADDR),
    )?;
    mem.write_slice(&table, GuestAddress(SMBIOS_TABLE_ADDR))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: [u8; 16] = [
        0x5e, 0x6a, 0x2b, 0x10, 0x4c, 0x3d, 0x4e, 0x2f, 0x9a, 0x1b, 0x00, 0x11, 0x22, 0x33, 0x44,
        0x55,
    ];

    /// Splits a table into (type, formatted area, strings) per structure.
    fn parse(mut t: &[u8]) -> Vec<(u8, Vec<u8>, Vec<String>)> {
        let mut out = Vec::new();
        while !t.is_empty() {
            let len = usize::from(t[1]);
            let formatted = t[..len].to_vec();
            let mut rest = &t[len..];
            let mut strings = Vec::new();
            if rest[0] == 0 {
                rest = &rest[2..];
            } else {
                while rest[0] != 0 {
                    let end = rest.iter().position(|&b| b == 0).unwrap();
                    strings.push(String::from_utf8(rest[..end].to_vec()).unwrap());
                    rest = &rest[end + 1..];
                }
                rest = &rest[1..];
            }
            out.push((formatted[0], formatted, strings));
            t = rest;
        }
        out
    }

    #[test]
    fn entry_point_checksums_to_zero_and_points_at_the_table() {
        let ep = entry_point(SMBIOS_TABLE_ADDR, 300);
        assert_eq!(&ep[..5], b"_SM3_");
        assert_eq!(ep.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(usize::from(ep[6]), ENTRY_POINT_LEN);
        assert_eq!(u32::from_le_bytes(ep[12..16].try_into().unwrap()), 300);
        assert_eq!(
            u64::from_le_bytes(ep[16..24].try_into().unwrap()),
            SMBIOS_TABLE_ADDR
        );
        assert_eq!(SMBIOS_ENTRY_ADDR % 16, 0);
    }

    #[test]
    fn table_has_bios_system_chassis_and_end_with_upstream_defaults() {
        let info = SmbiosInfo::default().with_uuid(UUID).with_serial("SN-1234");
        let t = info.table(&CpuTopology::flat(3)).unwrap();
        let s = parse(&t);
        let kinds: Vec<u8> = s.iter().map(|s| s.0).collect();
        assert_eq!(kinds, vec![0, 1, 3, 4, 127]);
        assert_eq!(s[0].1.len(), 0x18);
        assert_eq!(s[0].2, vec![BIOS_VENDOR, BIOS_VERSION, BIOS_RELEASE_DATE]);
        let (_, sys, strings) = &s[1];
        assert_eq!(sys.len(), 0x1b);
        assert_eq!(strings, &["KubeVirt", "None", "SN-1234", "KubeVirt"]);
        assert_eq!((sys[4], sys[5], sys[6], sys[7], sys[0x1a]), (1, 2, 0, 3, 4));
        assert_eq!(
            sys[8..24],
            [
                0x10, 0x2b, 0x6a, 0x5e, 0x3d, 0x4c, 0x2f, 0x4e, 0x9a, 0x1b, 0x00, 0x11, 0x22, 0x33,
                0x44, 0x55
            ]
        );
        assert_eq!(s[2].1.len(), 0x16);
        assert_eq!(s[2].2, vec!["KubeVirt", "SN-1234"]);
        let (_, cpu, strings) = &s[3];
        assert_eq!(cpu.len(), 0x30);
        assert_eq!(strings, &["CPU 0", "KubeVirt"]);
        assert_eq!((cpu[0x23], cpu[0x24], cpu[0x25]), (3, 3, 3));
        assert_eq!(u16::from_le_bytes([cpu[0x2a], cpu[0x2b]]), 3);
        assert_eq!(s[4].1.len(), 4);
        // Without a serial the field is "no string", not an empty one.
        let t = SmbiosInfo::default().table(&CpuTopology::flat(1)).unwrap();
        assert_eq!(parse(&t)[1].1[7], 0);
    }

    #[test]
    fn nul_and_oversized_strings_are_refused() {
        let e = SmbiosInfo::default()
            .with_serial("a\0b")
            .table(&CpuTopology::flat(1))
            .unwrap_err();
        assert!(e.to_string().contains("serial"), "{e}");
        let e = SmbiosInfo::default()
            .with_serial("x".repeat(70_000))
            .table(&CpuTopology::flat(1))
            .unwrap_err();
        assert!(matches!(e, SmbiosError::TooLarge(_)), "{e}");
    }

    #[test]
    fn tables_land_in_guest_memory_where_a_scan_finds_them() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let info = SmbiosInfo::default().with_serial("S");
        write_smbios(&mem, &info, &CpuTopology::flat(2)).unwrap();
        let anchor = (0xf_0000..0x10_0000u64)
            .step_by(16)
            .find(|&a| {
                let mut b = [0u8; 5];
                mem.read_slice(&mut b, GuestAddress(a)).unwrap();
                &b == b"_SM3_"
            })
            .unwrap();
        assert_eq!(anchor, SMBIOS_ENTRY_ADDR);
        let table = info.table(&CpuTopology::flat(2)).unwrap();
        let mut got = vec![0u8; table.len()];
        mem.read_slice(&mut got, GuestAddress(SMBIOS_TABLE_ADDR))
            .unwrap();
        assert_eq!(got, table);
        let dump = dump_bin(&info, &CpuTopology::flat(2)).unwrap();
        assert_eq!(&dump[32..], &table[..]);
        assert_eq!(u64::from_le_bytes(dump[16..24].try_into().unwrap()), 32);
    }
}
