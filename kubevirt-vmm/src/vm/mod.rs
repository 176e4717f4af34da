//! The VM: built from a [`VmConfig`], run on one thread per vCPU, ended with an [`ExitReason`].

pub mod config;
pub mod exit;
pub mod gsi_routing;
pub mod lifecycle;
pub mod msi;
mod pci;
mod snapshot;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_lapic_state, kvm_pit_config};
use kvm_ioctls::{Cap, Kvm, VmFd};
use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK, VIRTIO_ID_NET};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::acpi::ged::{GED_IRQ, GED_MMIO_ADDR, GED_MMIO_SIZE, Ged, GedEvents};
use crate::acpi::power::{AcpiPower, POWER_PORT_SPAN, SLEEP_CONTROL_PORT};
use crate::acpi::{self, AcpiError};
use crate::arch::layout::{BOOT_STACK_POINTER, KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use crate::arch::{self, ArchError, cpuid};
use crate::boot::firmware::FirmwareMemory;
use crate::boot::firmware::fwcfg::{MachineDescription, fw_cfg_items};
use crate::boot::{self, BootError, BootSource, FirmwareBoot};
use crate::bus::{Bus, BusError, SharedDevice};
use crate::devices::cmos::{CMOS_INDEX_PORT, CMOS_PORT_SPAN, Cmos, SystemClock};
use crate::devices::debug_exit::{DEBUG_EXIT_PORT, DebugExit};
use crate::devices::debugcon::{DEBUGCON_PORT, Debugcon};
use crate::devices::fw_cfg::{FW_CFG_PORT_SPAN, FW_CFG_SELECTOR_PORT, FwCfg};
use crate::devices::i8042::{I8042, I8042_DATA_PORT, I8042_PORT_SPAN};
use crate::devices::irq::IrqTrigger;
use crate::devices::serial::{
    COM1_IRQ, COM1_PORT, ConsoleError, ConsoleOutput, ConsoleStats, SERIAL_PORT_SPAN, SerialDevice,
};
use crate::memory::{self, MemoryError};
use crate::pci::PciError;
use crate::smbios::{self, SmbiosError};
use crate::memory::GuestMemoryMmap;
use crate::snapshot::{
    LoadedSnapshot, SnapshotError, SnapshotState, map_memory_file, restore_devices,
};
use crate::vcpu::{Buses, Vcpu, VcpuSnapshot, kick};
use crate::virtio::VirtioDevice;
use crate::virtio::pci::VirtioPciError;

pub use config::VmConfig;
pub use exit::{ExitReason, ExitRequester};
pub use lifecycle::{Lifecycle, LifecycleError, VmState};

/// How long [`Vm::pause`] waits for every vCPU to park.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The KVM API version this VMM speaks.
const KVM_API_VERSION: i32 = 12;

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

fn vm_ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::VmIoctl { ioctl, source }
}

/// Whether this host's KVM is KVM-on-PVM, where guest CPL 0 is emulated (for log lines and
/// test skips only: nothing behaves differently).
pub fn host_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

type Com1 = SerialDevice<IrqTrigger, ConsoleOutput>;

/// Builds a [`Vm`], optionally with extra devices of the embedding program: port-I/O and MMIO
/// [`BusDevice`](crate::BusDevice)s and [`VirtioDevice`]s on PCI.
///
/// ```no_run
/// use std::sync::{Arc, Mutex};
/// use kubevirt_vmm::virtio::block::{Block, RawFile};
/// use kubevirt_vmm::{BootSource, BusDevice, KernelImage, LinuxBoot, Vm, VmConfig};
///
/// /// A port that reads as 0x2a.
/// struct Answer;
/// impl BusDevice for Answer {
///     fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
///         data.fill(0x2a);
///     }
///     fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}
/// }
///
/// let boot = BootSource::Linux(LinuxBoot {
///     kernel: KernelImage::Path("target/demo-guest.elf".into()),
///     initrd: None,
///     cmdline: "console=ttyS0".into(),
/// });
/// let disk = RawFile::open("disk.img".as_ref(), false)?;
/// let vm = Vm::builder(VmConfig::new(1, 64 << 20, boot))
///     .pio_device(0x510, 1, Arc::new(Mutex::new(Answer)))
///     .virtio_device(Box::new(Block::new(Box::new(disk), "DISK-1")))
///     .build()?;
/// vm.start()?;
/// println!("{}", vm.wait());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct VmBuilder {
    config: VmConfig,
    lifecycle: Arc<Lifecycle>,
    pio: Vec<(u64, u64, SharedDevice)>,
    mmio: Vec<(u64, u64, SharedDevice)>,
    virtio: Vec<Box<dyn VirtioDevice>>,
    created_at: Instant,
}

impl VmBuilder {
    /// Starts building from `config`. The VM's creation time (see [`Vm::created_at`]) is now.
    pub fn new(config: VmConfig) -> Self {
        let lifecycle = Arc::new(Lifecycle::new(usize::from(config.vcpus)));
        VmBuilder {
            config,
            lifecycle,
            pio: Vec::new(),
            mmio: Vec::new(),
            virtio: Vec::new(),
            created_at: Instant::now(),
        }
    }

    /// The VM's lifecycle, for devices that end the VM (pass it as their [`ExitRequester`]).
    pub fn exit_requester(&self) -> Arc<Lifecycle> {
        self.lifecycle.clone()
    }

    /// Adds a device on ports `[base, base + len)`.
    pub fn pio_device(mut self, base: u16, len: u16, device: SharedDevice) -> Self {
        self.pio.push((u64::from(base), u64::from(len), device));
        self
    }

    /// Adds a device at guest-physical `[base, base + len)` (inside the MMIO hole, e.g. in
    /// `crate::arch::layout::MMIO_DEVICES_START`'s window).
    pub fn mmio_device(mut self, base: u64, len: u64, device: SharedDevice) -> Self {
        self.mmio.push((base, len, device));
        self
    }

    /// Adds a virtio device on PCI bus 0 (slots in the order added, after the host bridge at
    /// slot 0). With any virtio device the VM gets the PCI root complex: ports 0xCF8-0xCFF,
    /// ECAM at `crate::pci::PCI_MMCONFIG_START` and BARs in
    /// `crate::pci::PCI_MMIO_WINDOW_START`'s window; queue notifications are KVM ioeventfds.
    /// Devices: [`crate::virtio::block::Block`], [`crate::virtio::net::Net`],
    /// [`crate::virtio::rng::Rng`], [`crate::virtio::console::Console`], or the embedder's own.
    pub fn virtio_device(mut self, device: Box<dyn VirtioDevice>) -> Self {
        self.virtio.push(device);
        self
    }

    /// Creates the VM: KVM objects, RAM, devices, boot image and vCPUs. Nothing runs yet.
    ///
    /// # Errors
    /// [`VmError`] naming the step that failed: `/dev/kvm` cannot be opened or lacks a
    /// capability ([`VmError::OpenKvm`], [`VmError::MissingCapability`]), the vCPU count or
    /// topology is not possible, RAM cannot be mapped ([`VmError::Memory`]), the kernel or
    /// payload does not load ([`VmError::Boot`]), the console cannot be opened
    /// ([`VmError::Console`]), devices overlap ([`VmError::Bus`]) or a virtio device does not
    /// fit on PCI ([`VmError::Pci`], [`VmError::VirtioPci`]).
    pub fn build(self) -> Result<Vm, VmError> {
        self.build_from(None)
    }

    /// Builds the VM from the snapshot in `dir` instead of booting `config.boot`: guest RAM
    /// is mapped from the snapshot (lazily, copy-on-write), vCPUs, irqchip, clock and devices
    /// get their saved state, and [`Vm::start`] resumes the guest where it was. The
    /// configuration must be the one the snapshot was taken with, and the builder must have
    /// the same extra devices (see [`crate::snapshot`]).
    ///
    /// # Errors
    /// [`VmError::Snapshot`] when the snapshot is unreadable, of another format version,
    /// corrupt, truncated, or does not match the configuration or the devices (checked before
    /// anything runs); otherwise as [`VmBuilder::build`].
    pub fn restore(self, dir: &std::path::Path) -> Result<Vm, VmError> {
        let snapshot =
            LoadedSnapshot::load(dir, self.config.vcpus, self.config.memory_size)?;
        let memory = map_memory_file(
            &snapshot.memory_file,
            &snapshot.memory_path,
            &snapshot.state.layout,
            &memory::ram_ranges(self.config.memory_size),
            self.config.memory.prefault,
        )
        .map_err(SnapshotError::from)?;
        let firmware = self::snapshot::load_firmware(dir)?;
        let vm = self.build_from(Some(Restored {
            state: snapshot.state,
            memory,
        }))?;
        if let Some(f) = &firmware {
            vm.load_firmware_state(Some(f))
                .map_err(|why| SnapshotError::Firmware {
                    path: dir.join(crate::snapshot::FIRMWARE_FILE),
                    why,
                })?;
        }
        Ok(vm)
    }

    /// Builds the VM from saved `state` over guest RAM that already holds the guest's memory
    /// (received by a live migration), as [`VmBuilder::restore`] does from a snapshot file.
    pub(crate) fn build_restored(
        self,
        state: SnapshotState,
        memory: GuestMemoryMmap,
    ) -> Result<Vm, VmError> {
        self.build_from(Some(Restored { state, memory }))
    }

    /// The configuration the VM will be built with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The disks added so far, in order (a migration target receives into them).
    pub(crate) fn migration_disks(&self) -> Vec<crate::virtio::block::MigrationDisk> {
        self.virtio
            .iter()
            .filter_map(|d| d.migration_disk())
            .collect()
    }

    fn build_from(self, snapshot: Option<Restored>) -> Result<Vm, VmError> {
        let VmBuilder {
            config,
            lifecycle,
            pio,
            mmio,
            virtio,
            created_at,
        } = self;
        let disks = virtio.iter().filter_map(|d| d.migration_disk()).collect();
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != KVM_API_VERSION {
            return Err(VmError::ApiVersion(version));
        }
        for (cap, name) in [
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
            (Cap::Irqfd, "KVM_CAP_IRQFD"),
            (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
            (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
            (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
            (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCapability(name));
            }
        }
        let max = kvm.get_max_vcpus().min(255);
        if config.vcpus == 0 || usize::from(config.vcpus) > max {
            return Err(VmError::VcpuCount {
                requested: config.vcpus,
                max,
            });
        }
        let topology = config.cpu_topology();
        if topology.vcpus() != config.vcpus {
            return Err(VmError::Topology {
                topology,
                vcpus: config.vcpus,
            });
        }
        if host_is_pvm() {
            log::info!(
                "KVM on PVM detected: guest code at CPL 0 is emulated and runs ~2000x slower"
            );
        }
        kick::install_kick_handler().map_err(VmError::KickHandler)?;

        let vm_fd = Arc::new(kvm.create_vm().map_err(vm_ioctl("KVM_CREATE_VM"))?);
        // RAM goes in before the irqchip exists: on some hosts a memslot added after
        // KVM_CREATE_IRQCHIP costs milliseconds (5-11 ms measured on KVM-on-PVM, ~50 us before).
        let (memory, snapshot) = match snapshot {
            Some(Restored { state, memory }) => (memory, Some(state)),
            None => (
                memory::create_guest_memory(config.memory_size, config.memory)?,
                None,
            ),
        };
        memory::register_guest_memory(&vm_fd, &memory)?;
        vm_fd
            .set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(vm_ioctl("KVM_SET_TSS_ADDR"))?;
        vm_fd
            .set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .map_err(vm_ioctl("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm_fd
            .create_irq_chip()
            .map_err(vm_ioctl("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm_fd
            .create_pit2(pit)
            .map_err(vm_ioctl("KVM_CREATE_PIT2"))?;
        let firmware_boot = match &config.boot {
            BootSource::Firmware(f) => Some(f.clone()),
            _ => None,
        };
        let rsdp = config.acpi.then_some(acpi::RSDP_ADDR);
        // A restored guest's RAM already holds its kernel and tables.
        let plan = match snapshot {
            Some(_) => None,
            None => Some(boot::load(
                &memory,
                &config.boot,
                usize::from(config.vcpus),
                rsdp,
            )?),
        };
        let firmware_memory = match &firmware_boot {
            // Firmware brings its own tables and finds its way from the reset vector.
            Some(f) => Some(FirmwareMemory::map(
                &vm_fd,
                &memory,
                &f.firmware,
                memory.num_regions() as u32,
                plan.is_some(),
            )?),
            None => {
                if let Some(plan) = &plan {
                    arch::write_boot_tables(&memory, plan.page_access, BOOT_STACK_POINTER)
                        .map_err(VmError::BootTables)?;
                }
                None
            }
        };

        let mut pio_bus = Bus::new("pio");
        let mut mmio_bus = Bus::new("mmio");
        let com1 = match config.serial {
            Some(console) => {
                let irq = IrqTrigger::new().map_err(|source| VmError::IrqEventFd {
                    irq: COM1_IRQ,
                    source,
                })?;
                vm_fd
                    .register_irqfd(irq.eventfd(), COM1_IRQ)
                    .map_err(vm_ioctl("KVM_IRQFD (COM1)"))?;
                let dev = Arc::new(Mutex::new(SerialDevice::new(
                    irq,
                    ConsoleOutput::open(console)?,
                )));
                pio_bus.insert(dev.clone(), u64::from(COM1_PORT), SERIAL_PORT_SPAN)?;
                Some(dev)
            }
            None => None,
        };
        pio_bus.insert(
            Arc::new(Mutex::new(I8042::new(lifecycle.clone()))),
            u64::from(I8042_DATA_PORT),
            I8042_PORT_SPAN,
        )?;
        let (low, high) = ram_split(&memory);
        pio_bus.insert(
            Arc::new(Mutex::new(Cmos::new(low, high, SystemClock))),
            u64::from(CMOS_INDEX_PORT),
            CMOS_PORT_SPAN,
        )?;
        // Firmware gets SMBIOS and ACPI through fw_cfg and places them itself.
        let booting = plan.is_some();
        if let (Some(info), None, true) = (&config.smbios, &firmware_boot, booting) {
            smbios::write_smbios(&memory, info, &topology)?;
        }
        let mut power_button = None;
        if config.acpi {
            if firmware_boot.is_none() && booting {
                acpi::write_tables(&memory, &topology)?;
            }
            pio_bus.insert(
                Arc::new(Mutex::new(AcpiPower::new(lifecycle.clone()))),
                u64::from(SLEEP_CONTROL_PORT),
                POWER_PORT_SPAN,
            )?;
            let irq = IrqTrigger::new().map_err(|source| VmError::IrqEventFd {
                irq: GED_IRQ,
                source,
            })?;
            vm_fd
                .register_irqfd(irq.eventfd(), GED_IRQ)
                .map_err(vm_ioctl("KVM_IRQFD (ACPI GED)"))?;
            let ged = Ged::new(Arc::new(irq));
            power_button = Some(ged.events());
            mmio_bus.insert(Arc::new(Mutex::new(ged)), GED_MMIO_ADDR, GED_MMIO_SIZE)?;
        }
        if config.debug_exit {
            pio_bus.insert(
                Arc::new(Mutex::new(DebugExit::new(lifecycle.clone()))),
                u64::from(DEBUG_EXIT_PORT),
                1,
            )?;
        }
        let router = Arc::new(gsi_routing::GsiRouter::new(vm_fd.clone()));
        let mut notify_counters = Vec::new();
        let mut placed = Vec::new();
        // With ACPI the bus is there even without virtio devices: the FADT's PM timer is the
        // chipset's (PIIX4 PM at 00:01.3).
        if !virtio.is_empty() || config.acpi {
            (notify_counters, placed) = pci::add_pci(
                &vm_fd,
                &router,
                &memory,
                virtio,
                &mut pio_bus,
                &mut mmio_bus,
            )?;
        }
        if let Some(f) = &firmware_boot {
            firmware_devices(
                f,
                config.acpi,
                config.smbios.as_ref(),
                &topology,
                &memory,
                &placed,
                &mut pio_bus,
            )?;
        }
        for (base, len, dev) in pio {
            pio_bus.insert(dev, base, len)?;
        }
        for (base, len, dev) in mmio {
            mmio_bus.insert(dev, base, len)?;
        }
        let buses = Arc::new(Buses {
            pio: pio_bus,
            mmio: mmio_bus,
        });

        if let Some(s) = &snapshot {
            restore_devices(&buses, &s.devices).map_err(SnapshotError::from)?;
            s.machine
                .restore(&vm_fd)
                .map_err(SnapshotError::from)?;
        }
        let msr_list: Arc<[u32]> = kvm
            .get_msr_index_list()
            .map_err(vm_ioctl("KVM_GET_MSR_INDEX_LIST"))?
            .as_slice()
            .into();
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(vm_ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
        for index in 0..usize::from(config.vcpus) {
            // KVM takes the vCPU id as the local APIC's ID.
            let fd = vm_fd
                .create_vcpu(u64::from(topology.apic_id(index as u8)))
                .map_err(|source| VmError::CreateVcpu { index, source })?;
            if let Some(s) = &snapshot {
                s.vcpu_states[index]
                    .restore(&fd, index)
                    .map_err(SnapshotError::from)?;
            } else if let Some(plan) = &plan {
                let cpuid =
                    cpuid::vcpu_cpuid(&supported, &config.cpu_features, index as u8, &topology);
                let entry = plan.entries.get(index).and_then(Option::as_ref);
                arch::configure_vcpu(&fd, &cpuid, entry)
                    .map_err(|source| VmError::ConfigureVcpu { index, source })?;
            }
            vcpus.push(Vcpu::new(
                index,
                fd,
                buses.clone(),
                lifecycle.clone(),
                msr_list.clone(),
            ));
        }

        Ok(Vm {
            router,
            threads: Mutex::new(Vec::new()),
            vcpus: Mutex::new(vcpus),
            lifecycle,
            buses,
            com1,
            power_button,
            created_at,
            vm_fd,
            _kvm: kvm,
            memory,
            firmware: firmware_memory,
            notify_counters,
            disks,
        })
    }
}

/// Saved state and the guest RAM it goes with, for a VM that continues instead of booting.
struct Restored {
    state: SnapshotState,
    memory: GuestMemoryMmap,
}

/// The OpenFirmware device path SeaBIOS and OVMF match a virtio device at `slot` by.
fn boot_device_path(device: &pci::PlacedDevice) -> String {
    match device.device_type {
        VIRTIO_ID_BLOCK => format!("/pci@i0cf8/scsi@{:x}/disk@0,0", device.slot),
        VIRTIO_ID_NET => format!("/pci@i0cf8/ethernet@{:x}", device.slot),
        other => format!("/pci@i0cf8/pci1af4,{:x}@{:x}", 0x1040 + other, device.slot),
    }
}

/// fw_cfg (with what the firmware needs to know) and, if asked, the debug console.
fn firmware_devices(
    boot: &FirmwareBoot,
    acpi: bool,
    smbios: Option<&crate::smbios::SmbiosInfo>,
    topology: &crate::arch::topology::CpuTopology,
    memory: &GuestMemoryMmap,
    placed: &[pci::PlacedDevice],
    pio_bus: &mut Bus,
) -> Result<(), VmError> {
    let ram: Vec<(u64, u64)> = memory
        .iter()
        .map(|r| (r.start_addr().0, r.len()))
        .collect();
    let mut order = Vec::new();
    for &index in &boot.boot_order {
        let device = placed
            .get(index)
            .ok_or(VmError::BootOrder { index, devices: placed.len() })?;
        order.push(boot_device_path(device));
    }
    let reserved = if placed.is_empty() {
        Vec::new()
    } else {
        vec![(crate::pci::PCI_MMCONFIG_START, crate::pci::PCI_MMCONFIG_SIZE)]
    };
    let items = fw_cfg_items(&MachineDescription {
        ram: &ram,
        reserved: &reserved,
        topology,
        acpi,
        smbios,
        boot_order: &order,
    })
    .map_err(BootError::from)?;
    pio_bus.insert(
        Arc::new(Mutex::new(FwCfg::new(&items, memory.clone()))),
        u64::from(FW_CFG_SELECTOR_PORT),
        FW_CFG_PORT_SPAN,
    )?;
    if let Some(path) = &boot.debug_log {
        let file = std::fs::File::create(path).map_err(|source| {
            VmError::Boot(BootError::ReadFile {
                what: "firmware debug log",
                path: path.clone(),
                source,
            })
        })?;
        pio_bus.insert(
            Arc::new(Mutex::new(Debugcon::new(Box::new(file)))),
            u64::from(DEBUGCON_PORT),
            1,
        )?;
    }
    Ok(())
}

/// Bytes of RAM below the 32-bit hole and above 4 GiB.
fn ram_split(mem: &GuestMemoryMmap) -> (u64, u64) {
    let mut regions = mem.iter().map(|r| r.len());
    (regions.next().unwrap_or(0), regions.sum())
}

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

    /// Starts every vCPU on its own thread (named `vcpu<N>`).
    ///
    /// # Errors
    /// [`VmError::Lifecycle`] when the VM was started before or has ended;
    /// [`VmError::SpawnThread`] when a vCPU thread cannot be created (the VM then ends with
    /// [`ExitReason::VcpuError`]).
    pub fn start(&self) -> Result<(), VmError> {
        let vcpus = std::mem::take(&mut *self.vcpus.lock().unwrap_or_else(PoisonError::into_inner));
        self.lifecycle.start(vcpus.len())?;
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || vcpu.run());
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(source) => {
                    // vCPUs not spawned never run: count them out so waiting ends.
                    self.lifecycle.request_exit(ExitReason::VcpuError {
                        vcpu: index,
                        error: format!("spawning its thread failed: {source}"),
                    });
                    return Err(VmError::SpawnThread { index, source });
                }
            }
        }
        Ok(())
    }

    /// Parks every vCPU outside the guest. Guest state stays as it was.
    ///
    /// # Errors
    /// [`VmError::Lifecycle`] when the VM is not running, or its vCPUs did not park within
    /// 5 seconds.
    pub fn pause(&self) -> Result<(), VmError> {
        Ok(self.lifecycle.pause(PAUSE_TIMEOUT)?)
    }

    /// Lets a paused VM run again.
    ///
    /// # Errors
    /// [`VmError::Lifecycle`] when the VM is not paused.
    pub fn resume(&self) -> Result<(), VmError> {
        Ok(self.lifecycle.resume()?)
    }

    /// Stops the VM (if it is not already ending) and waits for its vCPU threads.
    pub fn stop(&self) -> ExitReason {
        self.lifecycle.request_exit(ExitReason::Stopped);
        self.wait()
    }

    /// Waits until the VM has ended and its vCPU threads are gone.
    pub fn wait(&self) -> ExitReason {
        let reason = self
            .lifecycle
            .wait_exit(None)
            .unwrap_or(ExitReason::Stopped);
        self.join_threads();
        reason
    }

    /// Like [`Vm::wait`], giving up after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitReason> {
        let reason = self.lifecycle.wait_exit(Some(timeout))?;
        self.join_threads();
        Some(reason)
    }

    fn join_threads(&self) {
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            // A vCPU thread only panics on a bug; its exit reason is recorded already.
            let _ = t.join();
        }
    }

    /// Where the VM is in its life.
    pub fn state(&self) -> VmState {
        self.lifecycle.state()
    }

    /// Why the VM ended, once it has.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.lifecycle.exit_reason()
    }

    /// The pieces live migration drives: run state, devices, KVM VM fd.
    pub(crate) fn migration_parts(&self) -> (&Lifecycle, &Buses, &VmFd) {
        (&self.lifecycle, &self.buses, &self.vm_fd)
    }

    /// Bytes a live migration would copy of this VM's disks now: what the guest has written
    /// to the disks that migrate by copy (`DiskMigration::Copy`: their allocated extents), as
    /// upstream adds the ephemeral disks' sizes to the data a block migration's
    /// `completionTimeoutPerGiB` scales with. 0 without such disks.
    pub fn migration_disk_bytes(&self) -> u64 {
        use crate::virtio::block::DiskMigration;
        self.disks
            .iter()
            .filter(|d| d.mode == DiskMigration::Copy)
            .map(|d| {
                let mut disk = d.disk.lock().unwrap_or_else(PoisonError::into_inner);
                match disk.allocated_extents() {
                    Ok(extents) => extents.iter().map(|e| e.1).sum(),
                    Err(_) => disk.size(),
                }
            })
            .sum()
    }

    /// The firmware's migrating state (image identity, UEFI variable store); `None` for a VM
    /// that does not boot firmware. The vCPUs must be paused.
    pub(crate) fn firmware_state(&self) -> Option<crate::boot::firmware::FirmwareState> {
        self.firmware.as_ref().map(FirmwareMemory::save)
    }

    /// Puts the source's firmware state in place before the migrated VM first runs.
    pub(crate) fn load_firmware_state(
        &self,
        state: Option<&crate::boot::firmware::FirmwareState>,
    ) -> Result<(), String> {
        match (&self.firmware, state) {
            (None, None) => Ok(()),
            (Some(f), Some(s)) => f.load(s),
            (Some(_), None) => Err(
                "this VM boots firmware, the migrating one does not: use the source's boot configuration".into(),
            ),
            (None, Some(_)) => Err(
                "the VM saved or sent boots firmware, this one does not: use its boot configuration".into(),
            ),
        }
    }

    /// The VM's disks in the order added (live migration hands over their locks and copies
    /// the ones that live with the VMI).
    pub(crate) fn migration_disks(&self) -> &[crate::virtio::block::MigrationDisk] {
        &self.disks
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

impl Drop for Vm {
    fn drop(&mut self) {
        if self.lifecycle.state() != VmState::Created {
            self.stop();
        }
    }
}
