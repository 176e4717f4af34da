//! The SMBIOS tables a VM's guest finds, decoded by an independent parser: Debian's
//! `dmidecode --from-dump` (installed by scripts/setup.sh).
//!
//! The dump is built from guest memory the way `dmidecode --dump-bin` builds one on a real
//! machine: the entry point found by scanning 0xF0000-0xFFFFF at offset 0, the structure table
//! it points to at offset 32, and the entry point's table address patched to 32.

use std::process::Command;

use kubevirt_vmm::smbios::{self, ENTRY_POINT_LEN, SmbiosInfo};
use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::{ConsoleConfig, CpuTopology, Vm};
use vm_memory::{Bytes, GuestAddress};

const UUID: &str = "5e6a2b10-4c3d-4e2f-9a1b-001122334455";
const SERIAL: &str = "kubevirt-serial-0042";

fn uuid_bytes() -> [u8; 16] {
    let hex: String = UUID.chars().filter(|c| *c != '-').collect();
    std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
}

/// Runs `dmidecode --from-dump` on `dump`; returns stdout after checking it reported no error.
fn dmidecode(dump: &[u8]) -> String {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let path = dir.as_path().join("smbios.bin");
    std::fs::write(&path, dump).unwrap();
    let out = match Command::new("dmidecode")
        .arg("--from-dump")
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("running dmidecode failed ({e}): install it (scripts/setup.sh does)"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dmidecode failed: {stderr}\n{stdout}");
    assert!(stderr.trim().is_empty(), "dmidecode complained: {stderr}");
    for bad in [
        "Invalid",
        "invalid",
        "Wrong",
        "wrong",
        "truncated",
        "Bad",
        "<OUT OF SPEC>",
    ] {
        assert!(
            !stdout.contains(bad),
            "dmidecode output says {bad:?}:\n{stdout}"
        );
    }
    stdout
}

fn assert_decoded(stdout: &str) {
    assert!(stdout.contains("SMBIOS 3.0.0 present."), "{stdout}");
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let has = |line: &str| lines.iter().any(|l| l.eq_ignore_ascii_case(line));
    assert!(has(&format!("UUID: {UUID}")), "UUID missing:\n{stdout}");
    assert!(
        has(&format!("Serial Number: {SERIAL}")),
        "serial missing:\n{stdout}"
    );
    for line in [
        "Vendor: KubeVirt-rs",
        "Manufacturer: KubeVirt",
        "Product Name: None",
        "Family: KubeVirt",
        "System Information",
        "Chassis Information",
        "Processor Information",
        "Core Count: 2",
        "Thread Count: 2",
        "BIOS Information",
        "End Of Table",
    ] {
        assert!(has(line), "{line:?} missing:\n{stdout}");
    }
}

#[test]
fn dmidecode_decodes_the_tables_a_guest_finds() {
    let info = SmbiosInfo::default()
        .with_uuid(uuid_bytes())
        .with_serial(SERIAL);
    let guest = programs::hello().unwrap();
    let vm = Vm::new(guest.vm_config(2, ConsoleConfig::Sink).with_smbios(info)).unwrap();
    let mem = vm.memory();

    // Find the anchor as an OS does: 16-byte steps through 0xF0000-0xFFFFF.
    let entry = (0xf_0000..0x10_0000u64)
        .step_by(16)
        .find(|&a| {
            let mut anchor = [0u8; 5];
            mem.read_slice(&mut anchor, GuestAddress(a)).unwrap();
            &anchor == b"_SM3_"
        })
        .expect("an _SM3_ anchor in the BIOS area");
    assert_eq!(entry, smbios::SMBIOS_ENTRY_ADDR);
    let mut ep = [0u8; ENTRY_POINT_LEN];
    mem.read_slice(&mut ep, GuestAddress(entry)).unwrap();
    let table_len = u32::from_le_bytes(ep[12..16].try_into().unwrap()) as usize;
    let table_addr = u64::from_le_bytes(ep[16..24].try_into().unwrap());
    let mut table = vec![0u8; table_len];
    mem.read_slice(&mut table, GuestAddress(table_addr))
        .unwrap();

    // dmidecode --dump-bin layout: the entry point with its address patched to 32.
    let mut dump = vec![0u8; 32];
    ep[16..24].copy_from_slice(&32u64.to_le_bytes());
    ep[5] = 0;
    ep[5] = 0u8.wrapping_sub(ep.iter().fold(0u8, |a, b| a.wrapping_add(*b)));
    dump[..ENTRY_POINT_LEN].copy_from_slice(&ep);
    dump.extend_from_slice(&table);
    assert_decoded(&dmidecode(&dump));
    // The library's own dump writer agrees.
    let info = SmbiosInfo::default()
        .with_uuid(uuid_bytes())
        .with_serial(SERIAL);
    assert_eq!(
        smbios::dump_bin(&info, &CpuTopology::flat(2)).unwrap(),
        dump
    );
}

/// Sockets, cores and threads: one Processor Information per socket, as dmidecode reads it.
#[test]
fn dmidecode_sees_one_processor_per_socket() {
    let topology = CpuTopology::new(2, 3, 2).unwrap();
    let out = dmidecode(&smbios::dump_bin(&SmbiosInfo::default(), &topology).unwrap());
    assert_eq!(out.matches("Processor Information").count(), 2, "{out}");
    for line in ["Socket Designation: CPU 0", "Socket Designation: CPU 1"] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    assert_eq!(out.matches("Core Count: 3").count(), 2, "{out}");
    assert_eq!(out.matches("Thread Count: 6").count(), 2, "{out}");
    assert!(
        out.contains("Multi-Core") || out.contains("Hardware Thread"),
        "{out}"
    );
}

#[test]
fn dmidecode_sees_a_broken_checksum() {
    // The check above can fail: dmidecode rejects a corrupted entry point.
    let mut dump = smbios::dump_bin(&SmbiosInfo::default(), &CpuTopology::flat(1)).unwrap();
    dump[5] ^= 0xff;
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let path = dir.as_path().join("bad.bin");
    std::fs::write(&path, &dump).unwrap();
    let out = Command::new("dmidecode")
        .arg("--from-dump")
        .arg(&path)
        .output()
        .expect("dmidecode installed (scripts/setup.sh)");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("System Information"), "{all}");
}
