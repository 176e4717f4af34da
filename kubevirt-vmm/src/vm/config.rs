//! What a VM is built from.

use crate::arch::cpuid::CpuFeatureMask;
use crate::arch::topology::CpuTopology;
use crate::boot::BootSource;
use crate::devices::serial::ConsoleConfig;
use crate::memory::MemoryOptions;
use crate::smbios::SmbiosInfo;

/// Everything [`crate::Vm::new`] needs.
#[derive(Debug)]
pub struct VmConfig {
    /// Number of vCPUs, 1..=255.
    pub vcpus: u8,
    /// How the vCPUs are arranged in sockets, cores and threads; `None`: one socket, every
    /// vCPU a core. [`VmConfig::with_topology`] sets it and `vcpus` together.
    pub topology: Option<CpuTopology>,
    /// Guest RAM in bytes (multiple of 4 KiB, at least 2 MiB).
    pub memory_size: u64,
    /// How guest RAM is backed.
    pub memory: MemoryOptions,
    /// What to boot.
    pub boot: BootSource,
    /// Where COM1's output goes; `None`: no serial port.
    pub serial: Option<ConsoleConfig>,
    /// CPUID features hidden from the guest.
    pub cpu_features: CpuFeatureMask,
    /// Put the debug-exit device at port 0xf4 (for test guests).
    pub debug_exit: bool,
    /// Write ACPI tables (RSDP at 0xE0000, in the BIOS area a kernel scans, and passed to a
    /// Linux kernel in `acpi_rsdp_addr` / PVH `rsdp_paddr`) and serve the ACPI sleep/reset
    /// registers at ports 0x600-0x603.
    pub acpi: bool,
    /// Write SMBIOS 3.0 tables (entry point at `crate::smbios::SMBIOS_ENTRY_ADDR`) saying
    /// this; `None`: no SMBIOS. Default: [`SmbiosInfo::default`] (upstream KubeVirt's
    /// manufacturer, product and family; no UUID or serial).
    pub smbios: Option<SmbiosInfo>,
    /// Extra fw_cfg files `(name, contents)`, as QEMU's `-fw_cfg name=NAME,file=PATH` (names
    /// of 1 to 55 bytes; QEMU asks for an `opt/` prefix on names of the user's own). A VM that
    /// boots firmware serves them beside the firmware's own files; any other VM with at least
    /// one gets a fw_cfg device of its own at ports 0x510-0x51B with DMA (signature, interface
    /// ID, UUID, RAM size, vCPU counts, the file directory and these files). Empty (the
    /// default): only a VM that boots firmware has fw_cfg. [`VmConfig::with_fw_cfg_file`] adds
    /// one.
    pub fw_cfg_files: Vec<(String, Vec<u8>)>,
}

impl VmConfig {
    /// A VM with `vcpus` vCPUs and `memory_size` bytes of RAM booting `boot`; no serial port,
    /// every supported CPU feature, no debug-exit port, ACPI tables, default SMBIOS tables, no
    /// fw_cfg files of its own.
    pub fn new(vcpus: u8, memory_size: u64, boot: BootSource) -> Self {
        VmConfig {
            vcpus,
            topology: None,
            memory_size,
            memory: MemoryOptions::default(),
            boot,
            serial: None,
            cpu_features: CpuFeatureMask::default(),
            debug_exit: false,
            acpi: true,
            smbios: Some(SmbiosInfo::default()),
            fw_cfg_files: Vec::new(),
        }
    }

    /// Serves `contents` as fw_cfg file `name` (see [`VmConfig::fw_cfg_files`]); a name that
    /// is too long or given twice fails the build with [`crate::VmError::Boot`].
    pub fn with_fw_cfg_file(mut self, name: impl Into<String>, contents: Vec<u8>) -> Self {
        self.fw_cfg_files.push((name.into(), contents));
        self
    }

    /// Writes SMBIOS tables from `info` (e.g. the firmware UUID and serial:
    /// `SmbiosInfo::default().with_uuid(uuid).with_serial(serial)`).
    pub fn with_smbios(mut self, info: SmbiosInfo) -> Self {
        self.smbios = Some(info);
        self
    }

    /// No SMBIOS tables.
    pub fn without_smbios(mut self) -> Self {
        self.smbios = None;
        self
    }

    /// Arranges the vCPUs as `topology` (and sets `vcpus` to its count).
    pub fn with_topology(mut self, topology: CpuTopology) -> Self {
        self.vcpus = topology.vcpus();
        self.topology = Some(topology);
        self
    }

    /// The topology the guest sees.
    pub fn cpu_topology(&self) -> CpuTopology {
        self.topology.unwrap_or(CpuTopology::flat(self.vcpus))
    }

    /// Sends COM1 to `console`.
    pub fn with_serial(mut self, console: ConsoleConfig) -> Self {
        self.serial = Some(console);
        self
    }

    /// Adds the debug-exit port.
    pub fn with_debug_exit(mut self) -> Self {
        self.debug_exit = true;
        self
    }

    /// No ACPI tables and no ACPI power registers.
    pub fn without_acpi(mut self) -> Self {
        self.acpi = false;
        self
    }

    /// Hides CPUID features.
    pub fn with_cpu_features(mut self, mask: CpuFeatureMask) -> Self {
        self.cpu_features = mask;
        self
    }

    /// Sets the memory backing options.
    pub fn with_memory_options(mut self, options: MemoryOptions) -> Self {
        self.memory = options;
        self
    }
}
