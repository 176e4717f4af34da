//! The PVH ELF form of a test guest boots on another VMM too: QEMU (Debian's qemu-system-x86,
//! installed by scripts/setup.sh) runs the same hello guest that kubevirt-vmm runs, and it prints
//! the same greeting and exits through the same debug-exit port.

use kubevirt_vmm::testguest::{elf, programs};
use std::process::Command;

#[test]
fn qemu_boots_the_pvh_hello_guest() {
    let dir = kubevirt_testsupport::tempdir("qemu-pvh");
    let (kernel, serial) = (dir.join("hello.elf"), dir.join("serial.txt"));
    std::fs::write(&kernel, elf::pvh_elf(&programs::hello().unwrap()).unwrap()).unwrap();
    let status = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35,accel=kvm",
            "-cpu",
            "host,-arch-capabilities",
            "-m",
            "64",
        ])
        .args(["-display", "none", "-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(&kernel)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=1"])
        .status()
        .expect("qemu-system-x86_64 is installed (run scripts/setup.sh)");
    // isa-debug-exit makes QEMU exit with (code << 1) | 1: the guest's exit code 0 gives 1.
    assert_eq!(status.code(), Some(1), "QEMU exit status");
    let text = String::from_utf8_lossy(&std::fs::read(&serial).unwrap()).into_owned();
    assert!(
        text.contains(programs::HELLO_TEXT.trim()),
        "serial: {text:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
