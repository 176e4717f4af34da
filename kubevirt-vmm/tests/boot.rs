//! Boot protocols on real vCPUs: the PVH ELF form of a test guest, and a real Linux kernel.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::wait;
use kubevirt_vmm::testguest::{GUEST_MEMORY_SIZE, elf, programs};
use kubevirt_vmm::{
    BootSource, ConsoleBuffer, ConsoleConfig, ExitReason, KernelImage, LinuxBoot, Vm, VmConfig,
    host_is_pvm,
};

/// The PVH image other VMMs boot runs on ours too: the loader finds the PVH note, the vCPU
/// starts in 32-bit protected mode, the stub enters long mode and drops to CPL 3.
#[test]
fn pvh_elf_test_guest_boots() {
    let image = elf::pvh_elf(&programs::hello().unwrap()).unwrap();
    let boot = BootSource::Linux(LinuxBoot {
        kernel: KernelImage::Bytes(image),
        initrd: None,
        cmdline: String::new(),
    });
    let console = ConsoleBuffer::new();
    let config = VmConfig::new(1, GUEST_MEMORY_SIZE, boot)
        .with_serial(ConsoleConfig::Buffer(console.clone()))
        .with_debug_exit();
    let vm = Vm::new(config).unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    assert_eq!(console.text(), programs::HELLO_TEXT);
}

/// Marker the Linux guest's /init prints before it reboots.
const LINUX_MARKER: &str = "KUBEVIRT-VMM-LINUX-BOOT-OK";

fn linux_guest_dir() -> PathBuf {
    std::env::var_os("KUBEVIRT_VMM_LINUX_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/linux-guest"))
}

/// Debian's cloud kernel with a one-line initramfs: the kernel boots to /init, which prints the
/// marker and reboots (`reboot=k`: through the i8042, so the VM ends with `Reset`).
#[test]
fn debian_cloud_kernel_boots_to_init() {
    if host_is_pvm() {
        // Straight to stderr, not through the test harness's capture, so the skip is visible.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED debian_cloud_kernel_boots_to_init: this host's KVM runs on PVM, where guest CPL 0 is \
             emulated ~2000x slower and a stock kernel cannot boot (see shared/notes/platform.md)"
        );
        return;
    }
    let dir = linux_guest_dir();
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.img"));
    assert!(
        kernel.exists() && initrd.exists(),
        "no Linux guest in {}: run kubevirt-vmm/scripts/build-linux-guest.sh first",
        dir.display()
    );
    let boot = BootSource::Linux(LinuxBoot {
        kernel: KernelImage::Path(kernel),
        initrd: Some(KernelImage::Path(initrd)),
        cmdline: "console=ttyS0 reboot=k panic=-1 rdinit=/init".into(),
    });
    let console = ConsoleBuffer::new();
    let vm = Vm::new(
        VmConfig::new(2, 256 << 20, boot).with_serial(ConsoleConfig::Buffer(console.clone())),
    )
    .unwrap();
    vm.start().unwrap();
    let reason = wait(&vm);
    let text = console.text();
    assert!(
        text.contains(LINUX_MARKER),
        "marker missing; console:\n{text}"
    );
    assert_eq!(reason, ExitReason::Reset, "console:\n{text}");
}
