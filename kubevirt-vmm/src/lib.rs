//! kubevirt-vmm: a reusable KVM virtual machine monitor library on the rust-vmm crates.
//!
//! A [`Vm`] is built from a [`VmConfig`]: guest RAM laid out around the 32-bit MMIO hole, an
//! in-kernel irqchip and PIT, CPUID from `KVM_GET_SUPPORTED_CPUID` minus a feature mask, one
//! thread per vCPU, and port-I/O/MMIO [`bus`]es that route exits to plain-struct devices
//! (16550 serial, i8042, CMOS RTC, a debug-exit port, and whatever the embedding program adds).
//! It boots a flat 64-bit payload, a Linux bzImage or a PVH ELF, and runs until the guest
//! powers off, resets, faults or the host stops it: [`Vm::wait`] returns the [`ExitReason`].
//!
//! ```no_run
//! use kubevirt_vmm::{BootSource, ConsoleConfig, KernelImage, LinuxBoot, Vm, VmConfig};
//!
//! let boot = BootSource::Linux(LinuxBoot {
//!     kernel: KernelImage::Path("vmlinuz".into()),
//!     initrd: Some(KernelImage::Path("initrd.img".into())),
//!     cmdline: "console=ttyS0 reboot=k panic=1".into(),
//! });
//! let config = VmConfig::new(2, 512 << 20, boot).with_serial(ConsoleConfig::File("console.log".into()));
//! let vm = Vm::new(config)?;
//! vm.start()?;
//! println!("guest ended: {}", vm.wait());
//! # Ok::<(), kubevirt_vmm::VmError>(())
//! ```
//!
//! Module map: [`arch`] (x86-64 layout, GDT, page tables, registers, CPUID, MSRs), [`memory`]
//! (guest RAM), [`bus`] (the `BusDevice` trait and address dispatch), [`devices`] (legacy
//! devices), [`pci`] (root complex, config space, BAR placement), [`virtio`] (the
//! `VirtioDevice` trait, the virtio-pci transport, virtio-blk and -rng), [`acpi`] (RSDP,
//! XSDT, FADT, MADT, MCFG, DSDT and the sleep/reset registers), [`smbios`] (the SMBIOS 3.0
//! tables carrying the system UUID and serial), [`boot`] (direct, bzImage and
//! PVH loading), [`vcpu`] (run loop, kicks) and [`vm`] (builder, lifecycle, exit reasons).
//! With the `test-guests` feature, `testguest` assembles
//! the small CPL 3 guests the integration tests, examples and benchmarks run.
#![deny(missing_docs)]

pub mod acpi;
pub mod arch;
pub mod boot;
pub mod bus;
pub mod devices;
pub mod memory;
pub mod pci;
pub mod smbios;
#[cfg(feature = "test-guests")]
pub mod testguest;
pub mod vcpu;
pub mod virtio;
pub mod vm;

pub use arch::cpuid::{CpuFeatureMask, CpuidError};
pub use arch::regs::Privilege;
pub use arch::topology::{CpuTopology, TopologyError};
pub use boot::{BootSource, DirectBoot, KernelImage, LinuxBoot};
pub use bus::{BusDevice, SharedDevice};
pub use devices::serial::{ConsoleBuffer, ConsoleConfig, ConsoleStats};
pub use memory::MemoryOptions;
pub use smbios::SmbiosInfo;
pub use vcpu::VcpuSnapshot;
pub use vm::{ExitReason, ExitRequester, Vm, VmBuilder, VmConfig, VmError, VmState, host_is_pvm};
