//! The VM: built from a [`VmConfig`], run on one thread per vCPU, ended with an [`ExitReason`].
//!
//! The pieces, one file each: [`VmBuilder`] collects the configuration and extra devices,
//! `assemble` creates the KVM VM, RAM, devices and vCPUs from them, `control` runs, pauses
//! and ends the VM, `firmware` adds what a firmware boot needs, `snapshot` and `migration`
//! are the glue to [`crate::snapshot`] and [`crate::migration`], and [`VmError`] is what all
//! of them fail with.

mod assemble;
mod builder;
pub mod config;
mod control;
mod error;
pub mod exit;
mod firmware;
pub mod io_stop;
pub mod gsi_routing;
pub mod lifecycle;
mod migration;
pub mod msi;
mod paused_clock;
mod pci;
mod snapshot;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[cfg(feature = "unstable-internals")]
use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::{Kvm, VmFd};

use crate::acpi::ged::GedEvents;
use crate::boot::firmware::FirmwareMemory;
use crate::devices::irq::IrqTrigger;
use crate::devices::serial::{ConsoleOutput, ConsoleStats, SerialDevice};
use crate::memory::GuestMemoryMmap;
use crate::vcpu::{Buses, Vcpu, VcpuSnapshot};

pub use builder::VmBuilder;
pub use config::VmConfig;
pub use error::VmError;
use error::vm_ioctl;
pub use exit::{ExitReason, ExitRequester};
pub use io_stop::DiskIoError;
pub use lifecycle::{Lifecycle, LifecycleError, VmState};
pub use paused_clock::{KVM_GET_CLOCK, KVM_SET_CLOCK};

/// How long [`Vm::pause`] waits for every vCPU to park.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this host's KVM is KVM-on-PVM, where guest CPL 0 is emulated (for log lines and
/// test skips only: nothing behaves differently).
pub fn host_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

type Com1 = SerialDevice<IrqTrigger, ConsoleOutput>;

/// A virtual machine. Dropping it stops it.
///
/// Fields drop in declaration order: vCPU threads end before the VM fd closes, and guest RAM
/// is unmapped last.
#[derive(Debug)]
pub struct Vm {
    router: Arc<gsi_routing::GsiRouter>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    vcpus: Mutex<Vec<Vcpu>>,
    lifecycle: Arc<Lifecycle>,
    buses: Arc<Buses>,
    com1: Option<Arc<Mutex<Com1>>>,
    power_button: Option<GedEvents>,
    created_at: Instant,
    vm_fd: Arc<VmFd>,
    _kvm: Kvm,
    memory: GuestMemoryMmap,
    /// Firmware memory slots' host mappings: unmapped after the VM fd is closed.
    firmware: Option<FirmwareMemory>,
    notify_counters: Vec<Arc<std::sync::atomic::AtomicU64>>,
    /// The virtio-blk disks in the order added, for live migration.
    disks: Vec<crate::virtio::block::MigrationDisk>,
}

impl Vm {
    /// Builds a VM from `config` with the standard devices only (see [`Vm::builder`] to add
    /// more). Nothing runs until [`Vm::start`].
    ///
    /// ```no_run
    /// use kubevirt_vmm::{BootSource, ConsoleBuffer, ConsoleConfig, KernelImage, LinuxBoot};
    /// use kubevirt_vmm::{Vm, VmConfig};
    ///
    /// let console = ConsoleBuffer::new();
    /// let boot = BootSource::Linux(LinuxBoot {
    ///     kernel: KernelImage::Path("target/demo-guest.elf".into()),
    ///     initrd: None,
    ///     cmdline: "console=ttyS0".into(),
    /// });
    /// let vm = Vm::new(
    ///     VmConfig::new(1, 64 << 20, boot).with_serial(ConsoleConfig::Buffer(console.clone())),
    /// )?;
    /// vm.start()?;
    /// std::thread::sleep(std::time::Duration::from_secs(1));
    /// vm.press_power_button()?;
    /// println!("{}\n{}", console.text(), vm.wait());
    /// # Ok::<(), kubevirt_vmm::VmError>(())
    /// ```
    ///
    /// # Errors
    /// As [`VmBuilder::build`].
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        VmBuilder::new(config).build()
    }

    /// Virtio queue notifications that exited to userspace instead of being caught by their
    /// KVM ioeventfd, over all virtio devices: 0 unless a guest moved a BAR. A metric, and the
    /// proof that notifies take the fast path.
    pub fn virtio_userspace_notifies(&self) -> u64 {
        self.notify_counters
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// A builder, to add devices of the embedding program.
    pub fn builder(config: VmConfig) -> VmBuilder {
        VmBuilder::new(config)
    }

    /// The VM's lifecycle, to end it from elsewhere ([`ExitRequester`]).
    pub fn exit_requester(&self) -> Arc<Lifecycle> {
        self.lifecycle.clone()
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The registers vCPU `index` parked with; `None` unless the VM is paused.
    pub fn vcpu_snapshot(&self, index: usize) -> Option<VcpuSnapshot> {
        self.lifecycle.snapshot(index)
    }

    /// COM1's counters (first byte time, bytes out), if there is a serial port.
    pub fn console_stats(&self) -> Option<Arc<ConsoleStats>> {
        self.com1
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(PoisonError::into_inner).stats())
    }

    /// Feeds `input` to COM1's receive FIFO; returns how many bytes fit.
    pub fn serial_input(&self, input: &[u8]) -> usize {
        self.com1.as_ref().map_or(0, |c| {
            c.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .enqueue_input(input)
        })
    }

    /// Presses the ACPI power button (see `crate::acpi::ged`): an ACPI guest OS shuts down
    /// gracefully and powers off through S5, ending the VM with [`ExitReason::PowerOff`]; a
    /// polling guest sees `crate::acpi::ged::GED_EVENT_POWER_BUTTON` in the register at
    /// `GED_MMIO_ADDR`. Returns at once: wait for the exit with a grace period
    /// ([`Vm::wait_timeout`]) and [`Vm::stop`] the VM if it does not come.
    ///
    /// # Errors
    /// [`VmError::NoPowerButton`] for a VM built without ACPI; [`VmError::PowerButton`] when
    /// the interrupt cannot be raised.
    pub fn press_power_button(&self) -> Result<(), VmError> {
        self.power_button
            .as_ref()
            .ok_or(VmError::NoPowerButton)?
            .press_power_button()
            .map_err(VmError::PowerButton)
    }

    /// A handle that presses the power button from any thread, without holding the `Vm`;
    /// `None` without ACPI.
    pub fn power_button(&self) -> Option<GedEvents> {
        self.power_button.clone()
    }

    /// When building started.
    pub fn created_at(&self) -> Instant {
        self.created_at
    }

    /// vCPU `index`'s LAPIC (`KVM_GET_LAPIC`), before [`Vm::start`]. While the VM is paused,
    /// [`Vm::vcpu_snapshot`] carries it.
    #[cfg(feature = "unstable-internals")]
    pub fn vcpu_lapic(&self, index: usize) -> Result<kvm_lapic_state, VmError> {
        let vcpus = self.vcpus.lock().unwrap_or_else(PoisonError::into_inner);
        let vcpu = vcpus.get(index).ok_or(VmError::VcpuUnavailable { index })?;
        vcpu.fd().get_lapic().map_err(vm_ioctl("KVM_GET_LAPIC"))
    }

    /// Sets vCPU `index`'s LAPIC (`KVM_SET_LAPIC`) before [`Vm::start`]; e.g. to software-enable
    /// it (`crate::arch::lapic::software_enable`) for a guest that cannot.
    #[cfg(feature = "unstable-internals")]
    pub fn set_vcpu_lapic(&self, index: usize, state: &kvm_lapic_state) -> Result<(), VmError> {
        let vcpus = self.vcpus.lock().unwrap_or_else(PoisonError::into_inner);
        let vcpu = vcpus.get(index).ok_or(VmError::VcpuUnavailable { index })?;
        vcpu.fd()
            .set_lapic(state)
            .map_err(vm_ioctl("KVM_SET_LAPIC"))
    }

    /// A copy of the VM's GSI routing table: the default irqchip routes and one MSI route per
    /// MSI-X vector a driver has unmasked.
    #[cfg(feature = "unstable-internals")]
    pub fn gsi_routing(&self) -> gsi_routing::GsiRoutingTable {
        self.router.table()
    }

    /// The buses, e.g. to list device ranges.
    #[cfg(feature = "unstable-internals")]
    pub fn buses(&self) -> &Buses {
        &self.buses
    }

    /// The KVM VM fd, for ioctls this crate does not wrap (irqfd, ioeventfd, MSI).
    #[cfg(feature = "unstable-internals")]
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm_fd
    }
}
