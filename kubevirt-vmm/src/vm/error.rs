//! [`VmError`]: what building or driving a VM can fail with, each naming the step or ioctl.

use crate::acpi::AcpiError;
use crate::acpi::ged::GED_IRQ;
use crate::arch::ArchError;
use crate::boot::BootError;
use crate::bus::BusError;
use crate::devices::serial::ConsoleError;
use crate::memory::MemoryError;
use crate::pci::PciError;
use crate::smbios::SmbiosError;
use crate::snapshot::SnapshotError;
use crate::virtio::pci::VirtioPciError;

use super::lifecycle::LifecycleError;

/// The KVM API version this VMM speaks.
pub(super) const KVM_API_VERSION: i32 = 12;

/// Errors building or driving a VM. Each says which step or ioctl failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` could not be opened.
    #[error(
        "opening /dev/kvm failed: {0} (is KVM enabled and is /dev/kvm accessible to this user?)"
    )]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The topology's vCPU count differs from `vcpus`.
    #[error("the CPU topology {topology} is not {vcpus} vCPUs (use VmConfig::with_topology)")]
    Topology {
        /// The topology.
        topology: crate::arch::topology::CpuTopology,
        /// The vCPU count configured.
        vcpus: u8,
    },
    /// The kernel speaks another KVM API.
    #[error("KVM_GET_API_VERSION returned {0}, this VMM needs {KVM_API_VERSION}")]
    ApiVersion(i32),
    /// A capability the VMM relies on is missing.
    #[error("the host KVM lacks {0}")]
    MissingCapability(&'static str),
    /// The vCPU count is out of range.
    #[error("{requested} vCPUs requested: must be between 1 and {max} on this host")]
    VcpuCount {
        /// Requested.
        requested: u8,
        /// Host maximum (`KVM_CAP_MAX_VCPUS`, capped at 255).
        max: usize,
    },
    /// A VM-level ioctl failed.
    #[error("{ioctl} failed: {source}")]
    VmIoctl {
        /// The ioctl.
        ioctl: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_CREATE_VCPU` failed.
    #[error("KVM_CREATE_VCPU for vCPU {index} failed: {source}")]
    CreateVcpu {
        /// vCPU index.
        index: usize,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Configuring a vCPU failed.
    #[error("configuring vCPU {index}: {source}")]
    ConfigureVcpu {
        /// vCPU index.
        index: usize,
        /// What failed.
        #[source]
        source: ArchError,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Loading the boot source.
    #[error("boot: {0}")]
    Boot(#[from] BootError),
    /// Writing boot tables.
    #[error("boot tables: {0}")]
    BootTables(#[source] ArchError),
    /// Placing a device.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Opening the console backend.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// Creating an interrupt eventfd.
    #[error("creating the eventfd for IRQ {irq} failed: {source}")]
    IrqEventFd {
        /// The IRQ.
        irq: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Installing the vCPU kick signal handler failed.
    #[error("installing the vCPU kick signal handler (SIGRTMIN) failed: {0}")]
    KickHandler(#[source] vmm_sys_util::errno::Error),
    /// Spawning a vCPU thread failed.
    #[error("spawning the thread for vCPU {index} failed: {source}")]
    SpawnThread {
        /// vCPU index.
        index: usize,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A lifecycle transition was refused.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// Placing a PCI device.
    #[error("PCI: {0}")]
    Pci(#[from] PciError),
    /// Writing the ACPI tables.
    #[error("ACPI: {0}")]
    Acpi(#[from] AcpiError),
    /// Writing the SMBIOS tables.
    #[error("SMBIOS: {0}")]
    Smbios(#[from] SmbiosError),
    /// Creating a virtio-pci transport.
    #[error(transparent)]
    VirtioPci(#[from] VirtioPciError),
    /// A vCPU's LAPIC was asked for while its thread owns it.
    #[error(
        "vCPU {index} does not exist or is already running: its LAPIC can only be read or set between Vm::new and Vm::start (read it from Vm::vcpu_snapshot while paused)"
    )]
    VcpuUnavailable {
        /// vCPU index.
        index: usize,
    },
    /// The VM has no ACPI, hence no power button.
    #[error(
        "this VM was built without ACPI (VmConfig::without_acpi), so it has no power button: stop it instead"
    )]
    NoPowerButton,
    /// The firmware boot order names a virtio device the VM does not have.
    #[error(
        "the firmware boot order names virtio device {index}, but the VM has {devices} (indices count from 0 in the order devices were added)"
    )]
    BootOrder {
        /// The index given.
        index: usize,
        /// How many virtio devices there are.
        devices: usize,
    },
    /// Taking or restoring a snapshot.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// Raising the power-button interrupt failed.
    #[error("pressing the ACPI power button: raising GSI {GED_IRQ} failed: {0}")]
    PowerButton(#[source] std::io::Error),
}

pub(super) fn vm_ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::VmIoctl { ioctl, source }
}
