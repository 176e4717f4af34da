//! Firmware boot through the VMM: SeaBIOS (Debian's bios-256k.bin) starts at the reset vector,
//! reads what fw_cfg tells it, enumerates PCI, finds the virtio disk named first in the boot
//! order and runs its boot sector, which prints a line on COM1 and ends the VM through the
//! debug-exit port.
//!
//! The same disk then boots under QEMU (`qemu-system-x86_64 -accel kvm -bios` the same
//! SeaBIOS) in the same run, and both times are printed (docs/PERFORMANCE.md has them).
//!
//! Under KVM on PVM the firmware's real-mode and CPL 0 code is emulated (~1-2 us an
//! instruction), so the boot takes a few seconds there: set KUBEVIRT_FIRMWARE_TIMEOUT
//! (seconds) to wait longer than the default.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kubevirt_vmm::testguest::boot_sector::{BOOT_SECTOR_LINE, boot_disk};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{
    BootSource, ConsoleBuffer, ConsoleConfig, ExitReason, FirmwareBoot, Vm, VmBuilder, VmConfig,
};

fn timeout() -> Duration {
    let secs = std::env::var("KUBEVIRT_FIRMWARE_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(secs)
}

#[test]
fn seabios_boots_the_boot_sector_of_the_first_disk_in_the_boot_order() {
    let dir = std::env::temp_dir().join(format!("kv-seabios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Disk 0 is blank (not bootable); disk 1 boots and is first in the boot order.
    let blank = dir.join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let disk = dir.join("boot.img");
    std::fs::write(&disk, boot_disk(BOOT_SECTOR_LINE, 0x31, 1 << 20)).unwrap();
    let log = dir.join("seabios.log");
    let console = ConsoleBuffer::new();
    let vm = two_disk_vm(&blank, &disk, &log, &console).build().unwrap();
    let started = Instant::now();
    vm.start().unwrap();
    let exit = vm.wait_timeout(timeout());
    let elapsed = started.elapsed();
    let text = console.text();
    let firmware_log = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "SeaBIOS boot to the boot sector's exit: {:.2} s\n--- console ---\n{text}\n--- SeaBIOS log ---\n{firmware_log}",
        elapsed.as_secs_f64()
    );
    if exit.is_none() {
        vm.stop();
    }
    assert_eq!(exit, Some(ExitReason::DebugExit { code: 0x31 }), "{text}");
    assert!(text.contains(BOOT_SECTOR_LINE), "{text}");
    assert!(
        firmware_log.contains("Searching bootorder for") || firmware_log.contains("boot order:"),
        "SeaBIOS read the boot order: {firmware_log}"
    );
    drop(vm);
    match qemu_boot(&disk, &dir) {
        Some((qemu, serial)) => {
            assert!(
                serial.contains(BOOT_SECTOR_LINE),
                "QEMU booted the same disk: {serial}"
            );
            eprintln!(
                "boot sector reached through SeaBIOS: kubevirt-vmm {:.2} s, QEMU {:.2} s",
                elapsed.as_secs_f64(),
                qemu.as_secs_f64()
            );
        }
        None => eprintln!("qemu-system-x86_64 is not installed: no comparison"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// SeaBIOS with a blank disk and `boot`, the second and first in the boot order, logging to
/// `log`.
fn two_disk_vm(blank: &Path, boot: &Path, log: &Path, console: &ConsoleBuffer) -> VmBuilder {
    let firmware = FirmwareBoot::seabios()
        .with_boot_order(vec![1])
        .with_debug_log(log);
    let config = VmConfig::new(2, 32 << 20, BootSource::Firmware(firmware))
        .with_serial(ConsoleConfig::Buffer(console.clone()))
        .with_debug_exit();
    Vm::builder(config)
        .virtio_device(Box::new(Block::new(
            Box::new(RawFile::open(blank, true).unwrap()),
            "blank",
        )))
        .virtio_device(Box::new(Block::new(
            Box::new(RawFile::open(boot, true).unwrap()),
            "boot",
        )))
}

/// A firmware boot cut once SeaBIOS has set up both virtio-blk drivers (queues live, fw_cfg
/// read, PCI BARs placed) and restored in a new VM: SeaBIOS carries on without starting over
/// and reads the boot sector through the restored queue.
#[test]
fn a_seabios_boot_snapshotted_after_its_virtio_setup_boots_in_the_restored_vm() {
    let dir = std::env::temp_dir().join(format!("kv-seabios-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blank = dir.join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let disk = dir.join("boot.img");
    std::fs::write(&disk, boot_disk(BOOT_SECTOR_LINE, 0x31, 1 << 20)).unwrap();
    let (log, restored_log) = (dir.join("seabios.log"), dir.join("restored.log"));
    let console = ConsoleBuffer::new();
    let vm = two_disk_vm(&blank, &disk, &log, &console).build().unwrap();
    vm.start().unwrap();
    let deadline = Instant::now() + timeout();
    let set_up = "Searching bootorder for: /pci@i0cf8/*@2";
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(set_up)
    {
        assert!(
            Instant::now() < deadline,
            "SeaBIOS never set up the boot disk"
        );
        assert!(
            vm.wait_timeout(Duration::from_millis(5)).is_none(),
            "the boot ended early"
        );
    }
    vm.pause().unwrap();
    let snap = dir.join("snap");
    vm.snapshot(&snap).unwrap();
    assert!(
        !console.text().contains(BOOT_SECTOR_LINE),
        "the boot sector ran before the cut"
    );
    vm.stop();
    drop(vm);

    let restored_console = ConsoleBuffer::new();
    let restored = two_disk_vm(&blank, &disk, &restored_log, &restored_console)
        .restore(&snap)
        .unwrap();
    restored.start().unwrap();
    let exit = restored.wait_timeout(timeout());
    if exit.is_none() {
        restored.stop();
    }
    let text = restored_console.text();
    let firmware_log = std::fs::read_to_string(&restored_log).unwrap_or_default();
    assert_eq!(
        exit,
        Some(ExitReason::DebugExit { code: 0x31 }),
        "{text}\n--- SeaBIOS after the restore ---\n{firmware_log}"
    );
    assert!(text.contains(BOOT_SECTOR_LINE), "{text}");
    assert!(
        !firmware_log.contains("SeaBIOS (version"),
        "SeaBIOS started over: {firmware_log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Boots `disk` under QEMU with the same SeaBIOS; returns the wall time until the boot sector's
/// debug-exit ended QEMU and what it printed on the serial port.
fn qemu_boot(disk: &Path, dir: &Path) -> Option<(Duration, String)> {
    let serial = dir.join("qemu-serial.log");
    let started = Instant::now();
    let status = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-m",
            "32",
            "-smp",
            "2",
            "-display",
            "none",
            "-nodefaults",
            "-monitor",
            "none",
        ])
        .args(["-bios", kubevirt_vmm::SEABIOS_PATH])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            disk.display()
        ))
        .args(["-device", "isa-debug-exit,iobase=0xf4"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .status()
        .ok()?;
    let elapsed = started.elapsed();
    // isa-debug-exit ends QEMU with (code << 1) | 1.
    assert_eq!(
        status.code(),
        Some((0x31 << 1) | 1),
        "QEMU's exit: {status}"
    );
    Some((
        elapsed,
        std::fs::read_to_string(&serial).unwrap_or_default(),
    ))
}
