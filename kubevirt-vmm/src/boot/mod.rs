//! Getting a guest to its first instruction: load an image into RAM, write whatever the boot
//! protocol hands over, and say where each vCPU starts.
//!
//! - [`DirectBoot`]: a flat 64-bit payload (test guests).
//! - [`LinuxBoot`]: a Linux kernel, either a bzImage (64-bit boot protocol, zero page) or an
//!   ELF `vmlinux` with a PVH note (`hvm_start_info`), with command line and initrd.
//! - [`FirmwareBoot`]: SeaBIOS or OVMF, started at the reset vector in real mode, told about
//!   the machine through fw_cfg; the firmware boots the disks.

pub mod direct;
pub mod firmware;
pub mod linux;

use crate::memory::GuestMemoryMmap;

pub use direct::DirectBoot;
pub use firmware::{Firmware, FirmwareBoot};
pub use linux::{KernelImage, LinuxBoot};

use crate::arch::paging::PageAccess;
use crate::arch::regs::{EntryMode, EntryState};

/// What to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootSource {
    /// A flat 64-bit payload.
    Direct(DirectBoot),
    /// A Linux kernel.
    Linux(LinuxBoot),
    /// Firmware (SeaBIOS or OVMF), which boots the VM's disks.
    Firmware(FirmwareBoot),
}

/// The result of loading: per-vCPU entry state (`None`: waits for INIT/SIPI from vCPU 0) and
/// who may use the boot page tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPlan {
    /// Entry state per vCPU.
    pub entries: Vec<Option<EntryState>>,
    /// Access the boot identity map grants.
    pub page_access: PageAccess,
}

/// Errors loading a boot source.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The entry point of a direct payload is not inside the payload.
    #[error(
        "entry point {entry:#x} is outside the payload loaded at {load_addr:#x} ({size} bytes)"
    )]
    EntryOutsideImage {
        /// Entry point.
        entry: u64,
        /// Load address.
        load_addr: u64,
        /// Payload size.
        size: usize,
    },
    /// The per-vCPU stacks would go below address 0.
    #[error("stack top {stack_top:#x} leaves no room for {vcpus} vCPU stacks")]
    StackTooLow {
        /// Requested stack top.
        stack_top: u64,
        /// vCPUs.
        vcpus: usize,
    },
    /// Writing into guest memory failed (the target is not RAM).
    #[error("writing the {what} at guest address {addr:#x} failed: {source}")]
    WriteImage {
        /// What was written.
        what: &'static str,
        /// Where.
        addr: u64,
        /// The memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// Reading a file failed.
    #[error("reading {what} {path}: {source}")]
    ReadFile {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel image is neither an ELF with a PVH note nor a bzImage.
    #[error(
        "the kernel is neither a bzImage ({bzimage}) nor an ELF vmlinux with a PVH entry note ({elf})"
    )]
    UnknownKernelFormat {
        /// Why the bzImage loader refused it.
        bzimage: linux_loader::loader::Error,
        /// Why the ELF loader refused it.
        elf: String,
    },
    /// The kernel loader failed.
    #[error("loading the kernel failed: {0}")]
    LoadKernel(#[source] linux_loader::loader::Error),
    /// The command line is invalid or too long.
    #[error("kernel command line: {0}")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The initrd does not fit in RAM below the kernel's limit.
    #[error("the initrd ({size} bytes) does not fit in guest RAM below {limit:#x}")]
    InitrdTooLarge {
        /// initrd size.
        size: u64,
        /// Highest address it may end at.
        limit: u64,
    },
    /// A firmware file has a size that cannot be mapped.
    #[error(
        "the {what} {path} is {size} bytes: it must be a non-zero multiple of 4 KiB, at most 16 MiB"
    )]
    FirmwareSize {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// Its size.
        size: u64,
    },
    /// KVM refused the firmware's memory slot.
    #[error("mapping the firmware at {addr:#x} ({size:#x} bytes) failed: {source}")]
    FirmwareSlot {
        /// Guest address.
        addr: u64,
        /// Size.
        size: u64,
        /// The ioctl error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The firmware's fw_cfg contents could not be built.
    #[error(transparent)]
    FirmwareTables(#[from] firmware::fwcfg::FirmwareTablesError),
    /// Writing boot parameters (zero page, `hvm_start_info`, command line) failed.
    #[error("writing the boot parameters failed: {0}")]
    BootParams(#[source] linux_loader::configurator::Error),
}

/// Loads `source` into `mem` for a VM with `vcpus` vCPUs. `rsdp` is where the VMM put the ACPI
/// RSDP, if it wrote ACPI tables: a Linux kernel is told directly (`boot_params.acpi_rsdp_addr`
/// or PVH `rsdp_paddr`) instead of having to scan the BIOS area for it.
pub fn load(
    mem: &GuestMemoryMmap,
    source: &BootSource,
    vcpus: usize,
    rsdp: Option<u64>,
) -> Result<BootPlan, BootError> {
    match source {
        BootSource::Direct(boot) => direct::load(mem, boot, vcpus),
        BootSource::Linux(boot) => linux::load(mem, boot, vcpus, rsdp),
        // The boot processor starts at the reset vector, the others wait for the firmware's
        // INIT/SIPI.
        BootSource::Firmware(_) => {
            let mut entries = vec![None; vcpus];
            if let Some(bsp) = entries.first_mut() {
                *bsp = Some(EntryState::new(EntryMode::RealModeReset, 0xfff0, 0));
            }
            Ok(BootPlan {
                entries,
                page_access: PageAccess::Supervisor,
            })
        }
    }
}
