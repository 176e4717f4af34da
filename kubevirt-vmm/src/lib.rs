//! kubevirt-vmm: a reusable KVM virtual machine monitor library on the rust-vmm crates.
//!
//! A [`Vm`] is built from a [`VmConfig`]: guest RAM laid out around the 32-bit MMIO hole, an
//! in-kernel irqchip and PIT, CPUID from `KVM_GET_SUPPORTED_CPUID` minus a feature mask
//! ([`CpuFeatureMask`]), one thread per vCPU, and port-I/O/MMIO buses that route exits to
//! plain-struct devices (16550 serial, i8042, CMOS RTC, a debug-exit port, and whatever the
//! embedding program adds as a [`BusDevice`] or a [`virtio::VirtioDevice`] through
//! [`VmBuilder`]). It boots a flat 64-bit payload ([`DirectBoot`]), a Linux bzImage or a PVH
//! ELF ([`LinuxBoot`]), or firmware that boots the disks as on QEMU ([`FirmwareBoot`]: SeaBIOS
//! or OVMF from the reset vector, told about the machine through a QEMU-compatible `fw_cfg`),
//! writes ACPI ([`acpi`]) and SMBIOS ([`SmbiosInfo`]) tables, and runs
//! until the guest powers off, resets, faults or the host stops it: [`Vm::wait`] returns the
//! [`ExitReason`].
//!
//! # Booting a kernel
//!
//! Any x86-64 Linux bzImage or PVH ELF (`vmlinux` with a `XEN_ELFNOTE_PHYS32_ENTRY` note)
//! boots. The workspace ships one that needs nothing else: the demo guest, a small Rust program
//! wrapped as a PVH ELF. Write it with
//! `cargo run -p kubevirt-demo-guest -- target/demo-image --elf target/demo-guest.elf`, then:
//!
//! ```no_run
//! use kubevirt_vmm::{BootSource, ConsoleConfig, ExitReason, KernelImage, LinuxBoot, Vm, VmConfig};
//!
//! let boot = BootSource::Linux(LinuxBoot {
//!     kernel: KernelImage::Path("target/demo-guest.elf".into()),
//!     initrd: None,
//!     cmdline: "console=ttyS0".into(),
//! });
//! let config = VmConfig::new(1, 64 << 20, boot)
//!     .with_serial(ConsoleConfig::File("console.log".into()));
//! let vm = Vm::new(config)?;
//! vm.start()?;
//! // The demo guest waits at a prompt; press its ACPI power button to end it.
//! vm.press_power_button()?;
//! assert_eq!(vm.wait(), ExitReason::PowerOff);
//! # Ok::<(), kubevirt_vmm::VmError>(())
//! ```
//!
//! `examples/vmm_hello.rs` boots a hand-written 40-byte payload with no files at all, or any
//! kernel given on its command line.
//!
//! # The public surface
//!
//! The crate root holds the VM ([`Vm`], [`VmBuilder`], [`VmConfig`], [`VmState`],
//! [`ExitReason`], [`VmError`]), memory and vCPU configuration ([`MemoryOptions`],
//! [`CpuTopology`], [`CpuFeatureMask`], [`VcpuSnapshot`]), boot sources ([`BootSource`],
//! [`FirmwareBoot`] with Debian's [`SEABIOS_PATH`] and [`OVMF_CODE_PATH`]), the
//! console ([`ConsoleConfig`], [`ConsoleBuffer`]) and the device trait for the buses
//! ([`BusDevice`]). [`virtio`] holds the [`virtio::VirtioDevice`] trait and the devices
//! (block with its [`virtio::block::BlockBackend`] trait, net with its
//! [`virtio::net::NetBackend`] trait, rng, console); [`acpi`] the tables and the power button;
//! [`snapshot`] the errors and file names of memory-state snapshots ([`Vm::snapshot`] saves a
//! paused VM to a directory, [`Vm::restore`] / [`VmBuilder::restore`] resume it, in this
//! process or another, with no second boot).
//! The rest (x86 layout and registers, the PCI root, the virtio-pci transport, queue workers)
//! stays inside; the `unstable-internals` feature opens it to this workspace's own tests and
//! benchmarks, with no stability promise. The `test-guests` feature adds `testguest`, the
//! small CPL 3 guests (assembled at run time with iced-x86) that the tests and benchmarks run.
#![deny(missing_docs)]

/// Declares a module the crate keeps to itself: private by default, public with the
/// `unstable-internals` feature, which the workspace's own tests and benchmarks turn on to reach
/// registers, layouts and hooks. Nothing behind that feature is a stable interface.
macro_rules! internal_mod {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[cfg(feature = "unstable-internals")]
        pub mod $name;
        $(#[$meta])*
        #[cfg(not(feature = "unstable-internals"))]
        #[allow(dead_code, unused_imports)]
        pub(crate) mod $name;
    };
}

pub mod acpi;
pub mod migration;
pub mod snapshot;
pub mod threads;
pub mod virtio;

internal_mod!(arch);
internal_mod!(boot);
internal_mod!(bus);
internal_mod!(devices);
internal_mod!(memory);
internal_mod!(pci);
internal_mod!(smbios);
internal_mod!(vcpu);
internal_mod!(vm);

#[cfg(feature = "test-guests")]
pub mod testguest;

pub use acpi::{AcpiError, GedEvents};
pub use arch::ArchError;
pub use arch::cpuid::{CpuFeatureMask, CpuidError};
pub use arch::regs::Privilege;
pub use arch::topology::{CpuTopology, TopologyError};
pub use boot::firmware::{OVMF_CODE_PATH, OVMF_VARS_PATH, SEABIOS_PATH};
pub use boot::{BootError, BootSource, DirectBoot, Firmware, FirmwareBoot, KernelImage, LinuxBoot};
pub use bus::{BusDevice, BusError, DeviceStateError, SharedDevice};
pub use devices::serial::{ConsoleBuffer, ConsoleConfig, ConsoleError, ConsoleStats};
pub use memory::{GuestMemoryMmap, GuestSlice, MemoryError, MemoryOptions};
pub use migration::{MigrationControl, MigrationError, MigrationOptions, MigrationProgress};
pub use pci::PciError;
pub use smbios::{SmbiosError, SmbiosInfo};
pub use snapshot::{SnapshotError, SnapshotInfo};
pub use vcpu::VcpuSnapshot;
pub use virtio::VirtioPciError;
pub use vm::{
    DiskIoError, ExitReason, ExitRequester, KVM_GET_CLOCK, KVM_SET_CLOCK, Lifecycle,
    LifecycleError, Vm, VmBuilder, VmConfig, VmError, VmState, host_is_pvm,
};
