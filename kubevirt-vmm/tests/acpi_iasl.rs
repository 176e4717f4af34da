//! The ACPI tables checked by an independent parser: ACPICA's `iasl -d` (Debian's
//! acpica-tools, installed by scripts/setup.sh) must disassemble each without errors or
//! warnings, and its output must show what the VMM meant to describe. (The RSDP has no SDT
//! header, which `iasl -d` needs; unit tests check it.)

use std::path::Path;
use std::process::Command;

use kubevirt_vmm::acpi::AcpiTables;

/// Disassembles `bytes` as `name`.dat in `dir`; returns the .dsl text and iasl's output.
fn disassemble(dir: &Path, name: &str, bytes: &[u8]) -> (String, String) {
    let dat = dir.join(format!("{name}.dat"));
    std::fs::write(&dat, bytes).unwrap();
    let out = Command::new("iasl")
        .arg("-d")
        .arg(&dat)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running iasl failed ({e}): install acpica-tools (scripts/setup.sh does)")
        });
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl -d {name} failed:\n{log}");
    let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl")))
        .unwrap_or_else(|e| panic!("iasl wrote no {name}.dsl ({e}):\n{log}"));
    for bad in ["Error", "Warning", "Invalid", "Incorrect checksum"] {
        assert!(!log.contains(bad), "iasl reported {bad} for {name}:\n{log}");
        assert!(!dsl.contains(bad), "{name}.dsl mentions {bad}:\n{dsl}");
    }
    (dsl, log)
}

#[test]
fn iasl_disassembles_every_table_cleanly() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    // 2 sockets x 2 cores: APIC IDs 0, 1, 2, 3.
    let (t, _) = AcpiTables::build(&kubevirt_vmm::CpuTopology::new(2, 2, 1).unwrap());

    let (dsdt, _) = disassemble(dir.as_path(), "dsdt", &t.dsdt);
    for want in [
        "PNP0A08",
        "PNP0A03",
        "PNP0C02",
        "PNP0501",
        "_S5_",
        "0xE0000000",
        "0x0CF8",
        // The Generic Event Device, its event register and interrupt, and the power button
        // its _EVT notifies.
        "ACPI0013",
        "OperationRegion (GDST, SystemMemory, 0xFEF00000, 0x04)",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
        "0x00000005,",
        "Method (_EVT, 1, Serialized)",
        "Notify (\\_SB.PWRB, 0x80)",
        "PNP0C0C",
    ] {
        assert!(dsdt.contains(want), "DSDT lacks {want}:\n{dsdt}");
    }

    let (madt, _) = disassemble(dir.as_path(), "apic", &t.madt);
    assert_eq!(
        madt.matches("Subtable Type : 00 [Processor Local APIC]")
            .count(),
        4,
        "{madt}"
    );
    assert_eq!(
        madt.matches("Subtable Type : 01 [I/O APIC]").count(),
        1,
        "{madt}"
    );
    assert!(madt.contains("FEE00000"), "{madt}");

    let (fadt, _) = disassemble(dir.as_path(), "facp", &t.fadt);
    for want in [
        "Hardware Reduced (V5) : 1",
        "Reset Register Supported (V2) : 1",
        // "KUBEVIRT" as a little-endian u64.
        "Hypervisor ID : 545249564542554B",
    ] {
        assert!(fadt.contains(want), "FADT lacks {want}:\n{fadt}");
    }
    // Sleep control register: system I/O at 0x600.
    assert!(fadt.contains("0000000000000600"), "{fadt}");

    let (mcfg, _) = disassemble(dir.as_path(), "mcfg", &t.mcfg);
    assert!(mcfg.contains("00000000E0000000"), "{mcfg}");

    let (xsdt, _) = disassemble(dir.as_path(), "xsdt", &t.xsdt);
    assert_eq!(xsdt.matches("ACPI Table Address").count(), 3, "{xsdt}");
    // iasl -d cannot read a bare RSDP (it has no SDT header); its checksums and XSDT pointer
    // are checked by kubevirt_vmm::acpi::tables' unit tests.
}
