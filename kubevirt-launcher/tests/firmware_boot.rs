//! VMIs without direct kernel boot boot through firmware, end to end: a disk whose boot sector
//! (written by the test) prints a line on COM1 and powers the VM off is pushed as a
//! containerDisk to a real registry (Debian's docker-registry on loopback), as a raw image and
//! as qcow2, and `kubevirt-launcher run` boots it through SeaBIOS: the line reaches the console
//! and the launcher ends with the guest's power-off (exit code 0). SeaBIOS's own messages
//! (sercon) reach the console too, and its debug log lands in `<run-dir>/firmware.log`.

mod common;

use common::{ImageBlobs, Launcher, push, start_registry, tempdir};
use kubevirt_vmm::testguest::boot_sector::{BOOT_SECTOR_LINE, boot_disk};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn vmi(name: &str, image: &str, bootloader: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: {name}, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  domain:
    memory: {{guest: 32Mi}}
    firmware: {{bootloader: {bootloader}}}
    devices:
      autoattachPodInterface: false
      disks:
      - {{name: scratch, disk: {{bus: virtio}}}}
      - {{name: boot, disk: {{bus: virtio}}, bootOrder: 1}}
  volumes:
  - {{name: scratch, emptyDisk: {{capacity: 1Mi}}}}
  - {{name: boot, containerDisk: {{image: \"{image}\"}}}}
"
    )
}

fn launch(dir: &Path, yaml: &str, registry: &str) -> Launcher {
    let file = dir.join("vmi.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"));
    cmd.args(["run", file.to_str().unwrap()])
        .args(["--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()])
        .args(["--plain-http-registry", registry]);
    Launcher::spawn(cmd)
}

fn boots(format: &str, disk: &[u8]) {
    let dir = tempdir(&format!("fw-{format}"));
    let (_registry, host) = start_registry(&dir);
    push(
        &host,
        "kubevirt/bootsector",
        format,
        &ImageBlobs::with(&[(&format!("disk/boot.{format}"), disk)]),
    );
    let image = format!("{host}/kubevirt/bootsector:{format}");
    let started = Instant::now();
    let mut launcher = launch(&dir, &vmi("fw", &image, "{bios: {}}"), &host);
    launcher.expect(BOOT_SECTOR_LINE);
    let reached = started.elapsed();
    let (status, out) = launcher.wait();
    assert!(status.success(), "the guest powered off: {out}");
    assert!(
        out.contains("SeaBIOS (version"),
        "SeaBIOS spoke on the console: {out}"
    );
    let log = std::fs::read_to_string(dir.join("run/firmware.log")).unwrap();
    assert!(
        log.contains("boot order:\n1: /pci@i0cf8/scsi@2/disk@0,0"),
        "the disk with bootOrder 1 (attached first, slot 2 after the chipset) is SeaBIOS's first choice: {log}"
    );
    eprintln!(
        "kubevirt-launcher run, {format} containerDisk: boot sector line after {:.2} s",
        reached.as_secs_f64()
    );
}

#[test]
fn a_raw_container_disk_boots_through_seabios() {
    boots("raw", &boot_disk(BOOT_SECTOR_LINE, 0x31, 1 << 20));
}

#[test]
fn a_qcow2_container_disk_boots_through_seabios() {
    let dir = tempdir("fw-qcow2-image");
    let raw = dir.join("boot.raw");
    std::fs::write(&raw, boot_disk(BOOT_SECTOR_LINE, 0x31, 1 << 20)).unwrap();
    let qcow2 = dir.join("boot.qcow2");
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .args([&raw, &qcow2])
        .output()
        .expect("qemu-img (qemu-utils)");
    assert!(out.status.success(), "{out:?}");
    boots("qcow2", &std::fs::read(&qcow2).unwrap());
}

/// A VMI asking for UEFI with secure boot is refused before anything starts, naming the field.
#[test]
fn efi_with_secure_boot_is_refused_naming_the_field() {
    let dir = tempdir("fw-secureboot");
    let mut launcher = launch(
        &dir,
        &vmi("sb", "example/none:1", "{efi: {secureBoot: true}}"),
        "127.0.0.1:1",
    );
    let (status, out) = launcher.wait();
    assert_eq!(status.code(), Some(2), "an unsupported document: {out}");
    assert!(
        out.contains("spec.domain.firmware.bootloader.efi.secureBoot"),
        "{out}"
    );
}
