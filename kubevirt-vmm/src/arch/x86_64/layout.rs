//! The guest-physical address map of an x86-64 VM.
//!
//! ```text
//! 0x0000_0500  boot GDT (8 descriptors)            0x0000_6000  PVH hvm_start_info + memmap
//! 0x0000_1000  boot TSS with a full I/O bitmap     0x0000_7000  Linux zero page (boot_params)
//! 0x0000_8ff0  boot stack pointer                  0x0000_9000  PML4, PDPT, 4 page directories
//! 0x0002_0000  kernel command line                 0x0009_fc00  EBDA (reserved in the e820 map)
//! 0x0010_0000  kernel / payload load address       low RAM up to 3 GiB
//! 0xc000_0000  32-bit MMIO hole (devices, IOAPIC, LAPIC, KVM TSS/identity map) up to 4 GiB
//! 0xff00_0000  firmware (SeaBIOS, OVMF code and variables), ending at 4 GiB, when it boots
//! 0x1_0000_0000  RAM above 3 GiB continues here
//! ```

/// Where the boot GDT lives.
pub const BOOT_GDT_START: u64 = 0x500;
/// Where the boot TSS (with its I/O permission bitmap) lives.
pub const BOOT_TSS_START: u64 = 0x1000;
/// Where the PVH `hvm_start_info` structure is written.
pub const PVH_INFO_START: u64 = 0x6000;
/// Where the PVH memory map follows `hvm_start_info`.
pub const PVH_MEMMAP_START: u64 = 0x6040;
/// Where the PVH module list (the initrd) is written.
pub const PVH_MODLIST_START: u64 = 0x6800;
/// Where the Linux zero page (`boot_params`) is written.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for kernels entered by the VMM.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The boot PML4; the PDPT and page directories follow it page by page.
pub const PML4_START: u64 = 0x9000;
/// The boot page-directory-pointer table.
pub const PDPT_START: u64 = 0xa000;
/// The first of the four boot page directories (4 GiB of 2 MiB pages).
pub const PD_START: u64 = 0xb000;
/// Where the kernel command line is written.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Largest command line accepted, terminating NUL included.
pub const CMDLINE_MAX_SIZE: usize = 0x1_0000;
/// Start of the Extended BIOS Data Area; RAM below it is usable.
pub const EBDA_START: u64 = 0x9_fc00;
/// First byte above the legacy BIOS area: where kernels and payloads are loaded.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO hole: guest RAM never occupies `[MMIO32_START, 4 GiB)`.
pub const MMIO32_START: u64 = 0xc000_0000;
/// Size of the 32-bit MMIO hole.
pub const MMIO32_SIZE: u64 = FIRST_ADDR_PAST_32BITS - MMIO32_START;
/// The first guest-physical address above 4 GiB, where RAM continues.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// Start of the window the VMM hands out to MMIO devices (inside the hole).
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
/// Size of the MMIO device window.
pub const MMIO_DEVICES_SIZE: u64 = 0x1000_0000;
/// The IOAPIC's MMIO address.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APICs' MMIO address.
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Three pages KVM needs for its real-mode TSS on Intel (`KVM_SET_TSS_ADDR`): where QEMU puts
/// them, below the 16 MiB under 4 GiB that firmware may occupy.
pub const KVM_TSS_ADDRESS: u64 = 0xfeff_d000;
/// One page KVM needs for the real-mode identity map on Intel (`KVM_SET_IDENTITY_MAP_ADDR`).
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfeff_c000;

/// Size of one page-directory entry mapping (a 2 MiB page).
pub const PAGE_SIZE_2M: u64 = 2 << 20;
