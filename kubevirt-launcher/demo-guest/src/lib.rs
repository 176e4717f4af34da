//! The demo guest `kubevirt-launcher` boots from `examples/vmi-demo.yaml`: a `no_std` Rust
//! program (`guest/`) that runs at CPL 3, so it works where guest kernel mode is emulated
//! (KVM on PVM) and on hardware KVM alike. It prints [`BANNER`], finds its virtio-pci devices,
//! reads the cloud-init disk, takes an address by DHCP on virtio-net, answers ARP and ping,
//! runs a few commands typed on the serial console ([`COMMANDS`]) and powers off through ACPI.
//!
//! `build.rs` compiles it with the host's rustc into a flat image ([`FLAT_IMAGE`]); [`pvh_elf`]
//! wraps that in the test-guest toolkit's PVH stub, which is what the container image carries.
//! [`write_image`] writes that image as an OCI layout and [`write_elf`] the bare ELF; the
//! `kubevirt-demo-image` binary does both from the command line. This is a development crate:
//! products (the launcher) do not link it, so they carry no assembler.
#![deny(missing_docs)]

mod image;

pub use image::{DemoImageError, IMAGE_TAG, KERNEL_PATH, write_elf, write_image};

use kubevirt_vmm::Privilege;
use kubevirt_vmm::testguest::{GUEST_LOAD_ADDR, TestGuest, TestGuestError, elf};

/// The guest as a flat image for [`GUEST_LOAD_ADDR`], entered at its first byte.
pub const FLAT_IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo-guest.bin"));

/// The first line the guest prints.
pub const BANNER: &str = "kubevirt-rs demo guest";

/// The commands the guest's console answers.
pub const COMMANDS: &[&str] = &[
    "help", "uname", "hostname", "disks", "disktest", "cat", "userdata", "ip", "reboot", "poweroff",
];

/// The guest as a test guest: entered at CPL 0, where it installs its IDT before dropping to
/// CPL 3 (direct boot, and the PVH stub of [`pvh_elf`]).
pub fn test_guest() -> TestGuest {
    TestGuest {
        name: "demo",
        code: FLAT_IMAGE.to_vec(),
        entry: GUEST_LOAD_ADDR,
        privilege: Privilege::Kernel,
    }
}

/// The guest as a PVH ELF, bootable by `firmware.kernelBoot` (and by QEMU's `-kernel`).
pub fn pvh_elf() -> Result<Vec<u8>, TestGuestError> {
    elf::pvh_elf(&test_guest())
}
