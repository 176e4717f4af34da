//! Firmware boot with OVMF (UEFI, no secure boot): Debian's OVMF_CODE_4M.fd with a per-VM copy
//! of OVMF_VARS_4M.fd, and the same test boot disk.
//!
//! OVMF runs its whole SEC, PEI and DXE phases at CPL 0, which KVM on PVM emulates: there its
//! first x87 instruction (`fninit` in SEC, at 0xFFFCED45 in Debian's 2022.11 build) is one the
//! PVM emulator lacks, and the VM ends at once with an emulation failure, before any serial
//! output. QEMU with the same OVMF stops at the same instruction on these machines. So the
//! test that needs OVMF to boot runs on hardware KVM only (it is skipped on PVM, saying so),
//! and `ovmf_progress_under_pvm` (run with `--ignored`) records how far it gets in
//! KUBEVIRT_OVMF_SECONDS (default 60): the exit, serial output, and where the vCPU is.

use std::time::{Duration, Instant};

use kubevirt_vmm::testguest::boot_sector::{BOOT_SECTOR_LINE, boot_disk};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{
    BootSource, ConsoleBuffer, ConsoleConfig, FirmwareBoot, OVMF_VARS_PATH, Vm, VmConfig,
    host_is_pvm,
};

struct Run {
    vm: Vm,
    console: ConsoleBuffer,
    dir: std::path::PathBuf,
}

fn start(tag: &str) -> Run {
    let dir = std::env::temp_dir().join(format!("kv-ovmf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vars = dir.join("vars.fd");
    std::fs::copy(OVMF_VARS_PATH, &vars).unwrap();
    let disk = dir.join("boot.img");
    std::fs::write(&disk, boot_disk(BOOT_SECTOR_LINE, 0x31, 1 << 20)).unwrap();
    let console = ConsoleBuffer::new();
    let boot = FirmwareBoot::ovmf(&vars).with_boot_order(vec![0]);
    let config = VmConfig::new(1, 256 << 20, BootSource::Firmware(boot))
        .with_serial(ConsoleConfig::Buffer(console.clone()))
        .with_debug_exit();
    let vm = Vm::builder(config)
        .virtio_device(Box::new(Block::new(
            Box::new(RawFile::open(&disk, true).unwrap()),
            "boot",
        )))
        .build()
        .unwrap();
    vm.start().unwrap();
    Run { vm, console, dir }
}

/// On hardware KVM, OVMF reaches its boot manager and prints on the serial console. (A BIOS
/// boot sector is not a UEFI boot option, so OVMF reports that and stays in its boot manager.)
///
/// OVMF's PlatformPei and its ACPI timer library pick the PM timer by the host bridge's
/// device ID: kubevirt-vmm presents QEMU's i440FX (8086:1237) with the PIIX4 PM function at
/// 00:01.3, whose `PMBA` it presets to 0xB000 with `PMIOSE` on, so OVMF keeps that block and
/// times its delays with the timer at 0xB008 (`tests/pm_timer.rs` drives the same registers
/// from a guest). Under KVM on PVM the test says why it does not run.
#[test]
fn ovmf_reaches_its_boot_manager_on_hardware_kvm() {
    if host_is_pvm() {
        eprintln!(
            "skipped: KVM on PVM emulates OVMF's CPL 0 code (~2000x slower); run this on hardware KVM (see ovmf_progress_under_pvm for how far it gets here)"
        );
        return;
    }
    let run = start("hw");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && !run.console.text().contains("BdsDxe") {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = run.console.text();
    run.vm.stop();
    let _ = std::fs::remove_dir_all(&run.dir);
    assert!(
        text.contains("BdsDxe"),
        "OVMF's boot manager spoke on COM1:\n{text}"
    );
}

/// How far OVMF gets under KVM on PVM in a bounded time: prints the serial output, the time of
/// its first byte and the vCPU's instruction pointer.
#[test]
#[ignore = "measures OVMF under KVM on PVM for a minute; run with --ignored"]
fn ovmf_progress_under_pvm() {
    let secs = std::env::var("KUBEVIRT_OVMF_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let started = Instant::now();
    let run = start("pvm");
    let stats = run.vm.console_stats();
    let exit = run.vm.wait_timeout(Duration::from_secs(secs));
    let text = run.console.text();
    let first = stats
        .and_then(|s| s.first_byte_at())
        .map(|t| t.duration_since(started));
    run.vm.pause().ok();
    let rip = run.vm.vcpu_snapshot(0).map(|s| s.regs.rip);
    eprintln!(
        "OVMF after {secs} s: exit {exit:?}, first serial byte at {first:?}, {} bytes of serial output, vCPU 0 at rip {rip:x?}\n{text}",
        text.len()
    );
    run.vm.stop();
    let _ = std::fs::remove_dir_all(&run.dir);
}
