//! Linux kernels: bzImage through the 64-bit boot protocol, or ELF `vmlinux` through PVH.
//!
//! The format is detected: an ELF carrying a `XEN_ELFNOTE_PHYS32_ENTRY` note boots via PVH
//! (32-bit flat entry, `hvm_start_info` in RBX); an ELF without it enters at `e_entry` in 64-bit
//! mode with a zero page; anything else must be a bzImage, entered at its 64-bit entry
//! (load address + 0x200) with the zero page in RSI. Both protocols get the same memory map,
//! command line and initrd.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::PathBuf;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{
    BzImage, Elf, KernelLoader, KernelLoaderResult, PvhBootCapability, load_cmdline,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use crate::memory::GuestMemoryMmap;

use super::{BootError, BootPlan};
use crate::arch::layout::{
    BOOT_STACK_POINTER, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, PVH_INFO_START,
    PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use crate::arch::paging::PageAccess;
use crate::arch::regs::{EntryMode, EntryState, Privilege};

/// `e820` type of usable RAM.
pub const E820_RAM: u32 = 1;
/// `e820` type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// `boot_params.hdr.boot_flag`.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `boot_params.hdr.header`: "HdrS".
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader` for a loader without an assigned ID.
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// Kernel alignment the zero page advertises for ELF kernels.
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// Offset of the 64-bit entry point from a bzImage's protected-mode load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Highest initrd end when the kernel does not say (`initrd_addr_max` of old protocols).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// A kernel or initrd: a file or bytes in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelImage {
    /// Read from this path at boot.
    Path(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

impl KernelImage {
    fn read(&self, what: &'static str) -> Result<Vec<u8>, BootError> {
        match self {
            KernelImage::Bytes(b) => Ok(b.clone()),
            KernelImage::Path(path) => {
                let mut f = File::open(path).map_err(|source| BootError::ReadFile {
                    what,
                    path: path.clone(),
                    source,
                })?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)
                    .map_err(|source| BootError::ReadFile {
                        what,
                        path: path.clone(),
                        source,
                    })?;
                Ok(buf)
            }
        }
    }
}

/// A Linux kernel to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    /// bzImage or ELF vmlinux.
    pub kernel: KernelImage,
    /// Optional initrd/initramfs.
    pub initrd: Option<KernelImage>,
    /// Kernel command line.
    pub cmdline: String,
}

/// The memory map both protocols hand over: RAM below the EBDA, the legacy hole reserved,
/// then every RAM region of `mem` from 1 MiB up.
pub fn memory_map(mem: &GuestMemoryMmap) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for region in mem.iter() {
        let start = region.start_addr().0.max(HIMEM_START);
        let end = region.start_addr().0 + region.len();
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

enum Protocol {
    /// 64-bit boot protocol: entry address, and the bzImage setup header if any.
    Linux64 {
        entry: u64,
        result: KernelLoaderResult,
    },
    /// PVH: 32-bit entry address.
    Pvh { entry: u64 },
}

fn load_kernel(mem: &GuestMemoryMmap, kernel: &[u8]) -> Result<(Protocol, u64), BootError> {
    let highmem = Some(GuestAddress(HIMEM_START));
    let elf = Elf::load(mem, None, &mut Cursor::new(kernel), highmem);
    match elf {
        Ok(result) => {
            let end = result.kernel_end;
            let protocol = match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => Protocol::Pvh { entry: entry.0 },
                _ => Protocol::Linux64 {
                    entry: result.kernel_load.0,
                    result,
                },
            };
            Ok((protocol, end))
        }
        Err(elf_err) => {
            let result =
                BzImage::load(mem, None, &mut Cursor::new(kernel), highmem).map_err(|bz| {
                    BootError::UnknownKernelFormat {
                        bzimage: bz,
                        elf: elf_err.to_string(),
                    }
                })?;
            let end = result.kernel_end;
            Ok((
                Protocol::Linux64 {
                    entry: result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                    result,
                },
                end,
            ))
        }
    }
}

/// Where the initrd goes: page-aligned, as high as possible below both the end of low RAM and
/// `addr_max`, above the kernel.
fn place_initrd(
    mem: &GuestMemoryMmap,
    size: u64,
    kernel_end: u64,
    addr_max: u64,
) -> Result<u64, BootError> {
    let low_end = mem.iter().next().map_or(0, |r| r.start_addr().0 + r.len());
    let limit = low_end.min(addr_max.saturating_add(1));
    let too_large = BootError::InitrdTooLarge { size, limit };
    let addr = limit.checked_sub(size).ok_or(too_large)? & !0xfff;
    if addr < kernel_end {
        return Err(BootError::InitrdTooLarge { size, limit });
    }
    Ok(addr)
}

fn load_initrd(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) -> Result<(), BootError> {
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|source| BootError::WriteImage {
            what: "initrd",
            addr,
            source,
        })
}

pub(super) fn load(
    mem: &GuestMemoryMmap,
    boot: &LinuxBoot,
    vcpus: usize,
    rsdp: Option<u64>,
) -> Result<BootPlan, BootError> {
    let kernel = boot.kernel.read("kernel")?;
    let (protocol, kernel_end) = load_kernel(mem, &kernel)?;

    let cmdline = Cmdline::try_from(&boot.cmdline, CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline).map_err(BootError::LoadKernel)?;
    let cmdline_size = cmdline
        .as_cstring()
        .map_err(BootError::Cmdline)?
        .as_bytes_with_nul()
        .len() as u32;

    let initrd = match &boot.initrd {
        Some(image) => {
            let data = image.read("initrd")?;
            let addr_max = match &protocol {
                Protocol::Linux64 {
                    result:
                        KernelLoaderResult {
                            setup_header: Some(hdr),
                            ..
                        },
                    ..
                } if hdr.initrd_addr_max != 0 => u64::from(hdr.initrd_addr_max),
                _ => DEFAULT_INITRD_ADDR_MAX,
            };
            let addr = place_initrd(mem, data.len() as u64, kernel_end, addr_max)?;
            load_initrd(mem, addr, &data)?;
            Some((addr, data.len() as u64))
        }
        None => None,
    };

    let map = memory_map(mem);
    let entry = match protocol {
        Protocol::Linux64 { entry, result } => {
            let layout = BootLayout {
                initrd,
                rsdp,
                map: &map,
            };
            write_zero_page(mem, result.setup_header, cmdline_size, &layout)?;
            let mut e = EntryState::new(
                EntryMode::Long64(Privilege::Kernel),
                entry,
                BOOT_STACK_POINTER,
            );
            e.rsi = ZERO_PAGE_START;
            e
        }
        Protocol::Pvh { entry } => {
            write_start_info(
                mem,
                &BootLayout {
                    initrd,
                    rsdp,
                    map: &map,
                },
            )?;
            let mut e = EntryState::new(EntryMode::Protected32, entry, BOOT_STACK_POINTER);
            e.rbx = PVH_INFO_START;
            e
        }
    };
    let mut entries = vec![None; vcpus];
    if let Some(first) = entries.first_mut() {
        *first = Some(entry);
    }
    Ok(BootPlan {
        entries,
        page_access: PageAccess::Supervisor,
    })
}

/// Where things are in guest memory, for the boot parameters to point at.
struct BootLayout<'a> {
    /// initrd address and size.
    initrd: Option<(u64, u64)>,
    /// ACPI RSDP address, when the VMM wrote ACPI tables.
    rsdp: Option<u64>,
    /// E820 map: (address, size, type).
    map: &'a [(u64, u64, u32)],
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    setup_header: Option<linux_loader::loader::bootparam::setup_header>,
    cmdline_size: u32,
    layout: &BootLayout<'_>,
) -> Result<(), BootError> {
    let BootLayout { initrd, rsdp, map } = *layout;
    let mut params = boot_params::default();
    if let Some(hdr) = setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_size;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    for (slot, (addr, size, kind)) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *kind,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    params.acpi_rsdp_addr = rsdp.unwrap_or(0);
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(BootError::BootParams)
}

fn write_start_info(mem: &GuestMemoryMmap, layout: &BootLayout<'_>) -> Result<(), BootError> {
    let BootLayout { initrd, rsdp, map } = *layout;
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp.unwrap_or(0),
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    if let Some((paddr, size)) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
        params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        params.set_modules(&[module], GuestAddress(PVH_MODLIST_START));
    }
    // The memory map must end before the module list: 0x7c0 bytes hold 124 entries, and
    // `memory_map` produces at most 4.
    let memmap: Vec<hvm_memmap_table_entry> = map
        .iter()
        .map(|&(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(BootError::BootParams)
}

#[cfg(test)]
mod tests;
