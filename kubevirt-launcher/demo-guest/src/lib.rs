//! The demo guest `kubevirt-launcher` boots from `examples/vmi-demo.yaml`: a `no_std` Rust
//! program (`guest/`) that runs at CPL 3, so it works where guest kernel mode is emulated
//! (KVM on PVM) and on hardware KVM alike. It prints [`BANNER`], finds its virtio-pci devices,
//! reads the cloud-init disk, takes an address by DHCP on virtio-net, answers ARP and ping,
//! runs a few commands typed on the serial console ([`COMMANDS`]) and powers off through ACPI.
//!
//! `build.rs` builds it (a cargo package of its own: it links the `sunset` SSH server) into a
//! flat image ([`FLAT_IMAGE`]) linked at [`IMAGE_BASE`]; [`vm_config`] boots that directly,
//! [`pvh_elf`] wraps it with the test-guest toolkit's PVH stub, which is what the container
//! image carries. [`write_image`] writes that image as an OCI layout and [`write_elf`] the bare
//! ELF; the `kubevirt-demo-image` binary does both from the command line. This is a development
//! crate: products (the launcher) do not link it, so they carry no assembler.
#![deny(missing_docs)]

mod image;

pub use image::{DemoImageError, IMAGE_TAG, KERNEL_PATH, write_elf, write_image, write_image_with};

use kubevirt_vmm::testguest::{GUEST_LOAD_ADDR, GUEST_STACK_TOP, TestGuest, TestGuestError, elf};
use kubevirt_vmm::{BootSource, ConsoleConfig, DirectBoot, Privilege, VmConfig};

/// The guest as a flat image for [`IMAGE_BASE`], entered at its first byte.
pub const FLAT_IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo-guest.bin"));

/// Where the image is linked and loaded (4 MiB): above the PVH stub (which the toolkit puts at
/// 1 MiB + 64 KiB, too close for an image of this size) and the guest's DMA arena (3-4 MiB).
/// Image and zeroed data end below 8 MiB, the least RAM the guest needs.
pub const IMAGE_BASE: u64 = 0x40_0000;

/// RAM the tests give the guest.
pub const MEMORY_SIZE: u64 = 16 << 20;

/// The first line the guest prints.
pub const BANNER: &str = "kubevirt-rs demo guest";

/// The commands the guest's console answers.
pub const COMMANDS: &[&str] = &[
    "help", "uname", "hostname", "disks", "disktest", "cat", "userdata", "ip", "echo", "exit",
    "reboot", "poweroff",
];

/// A VM config that boots the guest directly (no firmware, no stub) at `privilege`: at
/// [`Privilege::Kernel`] it installs its IDT and halts while idle, at [`Privilege::User`] it
/// polls. One vCPU, [`MEMORY_SIZE`] of RAM, COM1 to `console`, the debug-exit port.
pub fn vm_config(privilege: Privilege, console: ConsoleConfig) -> VmConfig {
    let boot = BootSource::Direct(DirectBoot {
        image: FLAT_IMAGE.to_vec(),
        load_addr: IMAGE_BASE,
        entry: IMAGE_BASE,
        stack_top: GUEST_STACK_TOP,
        privilege,
    });
    VmConfig::new(1, MEMORY_SIZE, boot)
        .with_serial(console)
        .with_debug_exit()
}

/// The PVH stub's program: a jump to [`IMAGE_BASE`] (`movabs rax, IMAGE_BASE; jmp rax`), entered
/// at CPL 0 so the guest installs its IDT before dropping to CPL 3.
fn trampoline() -> TestGuest {
    let mut code = vec![0x48, 0xb8];
    code.extend_from_slice(&IMAGE_BASE.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xe0]);
    TestGuest {
        name: "demo",
        code,
        entry: GUEST_LOAD_ADDR,
        privilege: Privilege::Kernel,
    }
}

/// The guest as a PVH ELF, bootable by `firmware.kernelBoot` (and by QEMU's `-kernel`): the
/// toolkit's stub image (its loadable segment at 1 MiB: page tables, GDT, TSS, entry, and the
/// [`trampoline`]) plus a second loadable segment with [`FLAT_IMAGE`] at [`IMAGE_BASE`].
pub fn pvh_elf() -> Result<Vec<u8>, TestGuestError> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let stub = elf::pvh_elf(&trampoline())?;
    let field = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&stub[at..at + 8]);
        u64::from_le_bytes(b) as usize
    };
    // The stub's program headers: [0] PT_LOAD, [1] PT_NOTE.
    let (load, note) = (EHDR, EHDR + PHDR);
    let (seg_off, seg_len) = (field(load + 8), field(load + 32));
    let (note_off, note_len) = (field(note + 8), field(note + 32));
    let mut out = stub[..EHDR].to_vec();
    out[56..58].copy_from_slice(&3u16.to_le_bytes()); // e_phnum
    let new_note = EHDR + 3 * PHDR;
    let stub_at = (new_note + note_len).next_multiple_of(0x1000);
    let image_at = (stub_at + seg_len).next_multiple_of(0x1000);
    let mut phdr = |p_type: u32, flags: u32, offset: usize, addr: u64, size: usize, align: u64| {
        out.extend_from_slice(&p_type.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&(size as u64).to_le_bytes());
        out.extend_from_slice(&(size as u64).to_le_bytes());
        out.extend_from_slice(&align.to_le_bytes());
    };
    const PT_LOAD: u32 = 1;
    const PT_NOTE: u32 = 4;
    phdr(PT_LOAD, 7, stub_at, GUEST_LOAD_ADDR, seg_len, 0x1000);
    phdr(PT_LOAD, 7, image_at, IMAGE_BASE, FLAT_IMAGE.len(), 0x1000);
    phdr(PT_NOTE, 4, new_note, 0, note_len, 4);
    out.extend_from_slice(&stub[note_off..note_off + note_len]);
    out.resize(stub_at, 0);
    out.extend_from_slice(&stub[seg_off..seg_off + seg_len]);
    out.resize(image_at, 0);
    out.extend_from_slice(FLAT_IMAGE);
    Ok(out)
}
