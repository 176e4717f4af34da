//! Assembling a [`Vm`] from a [`VmBuilder`]: the KVM VM and its irqchip, guest RAM, the
//! standard devices, the PCI root with the virtio devices, the boot image or the restored
//! state, and the vCPUs.

use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::error::{KVM_API_VERSION, vm_ioctl};
use super::firmware::{firmware_devices, plain_fw_cfg};
use super::{Vm, VmBuilder, VmError, gsi_routing, host_is_pvm, pci};
use crate::acpi::ged::{GED_IRQ, GED_MMIO_ADDR, GED_MMIO_SIZE, Ged};
use crate::acpi::power::{AcpiPower, POWER_PORT_SPAN, SLEEP_CONTROL_PORT};
use crate::acpi;
use crate::arch::layout::{BOOT_STACK_POINTER, KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use crate::arch::{self, cpuid};
use crate::boot::firmware::FirmwareMemory;
use crate::boot::{self, BootSource};
use crate::bus::Bus;
use crate::devices::cmos::{CMOS_INDEX_PORT, CMOS_PORT_SPAN, Cmos, SystemClock};
use crate::devices::debug_exit::{DEBUG_EXIT_PORT, DebugExit};
use crate::devices::i8042::{I8042, I8042_DATA_PORT, I8042_PORT_SPAN};
use crate::devices::irq::IrqTrigger;
use crate::devices::serial::{COM1_IRQ, COM1_PORT, ConsoleOutput, SERIAL_PORT_SPAN, SerialDevice};
use crate::memory::{self, GuestMemoryMmap};
use crate::smbios;
use crate::snapshot::{SnapshotError, SnapshotState, restore_devices};
use crate::vcpu::{Buses, Vcpu, kick};

impl VmBuilder {
    /// Builds the VM, booting `config.boot` or, given `snapshot`, continuing from it.
    pub(super) fn build_from(self, snapshot: Option<Restored>) -> Result<Vm, VmError> {
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
        lifecycle.clock.attach(vm_fd.clone());
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
                let irq = irqfd_trigger(&vm_fd, COM1_IRQ, "KVM_IRQFD (COM1)")?;
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
            let irq = irqfd_trigger(&vm_fd, GED_IRQ, "KVM_IRQFD (ACPI GED)")?;
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
                &config.fw_cfg_files,
                &mut pio_bus,
            )?;
        } else if !config.fw_cfg_files.is_empty() {
            plain_fw_cfg(
                config.smbios.as_ref(),
                config.vcpus,
                &memory,
                &config.fw_cfg_files,
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
pub(super) struct Restored {
    pub(super) state: SnapshotState,
    pub(super) memory: GuestMemoryMmap,
}

/// Bytes of RAM below the 32-bit hole and above 4 GiB.
fn ram_split(mem: &GuestMemoryMmap) -> (u64, u64) {
    let mut regions = mem.iter().map(|r| r.len());
    (regions.next().unwrap_or(0), regions.sum())
}

/// A new interrupt line that raises `gsi` through a KVM irqfd (`ioctl` names it in errors).
fn irqfd_trigger(vm_fd: &VmFd, gsi: u32, ioctl: &'static str) -> Result<IrqTrigger, VmError> {
    let irq = IrqTrigger::new().map_err(|source| VmError::IrqEventFd { irq: gsi, source })?;
    vm_fd
        .register_irqfd(irq.eventfd(), gsi)
        .map_err(vm_ioctl(ioctl))?;
    Ok(irq)
}
