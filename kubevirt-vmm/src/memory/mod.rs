//! Guest RAM: where it goes in the guest-physical address space and how it is backed.
//!
//! RAM below the 32-bit MMIO hole is one region, whatever is left continues above 4 GiB as a
//! second. Both are anonymous private mappings registered with KVM as memory slots 0 and 1.
//!
//! Every region carries a dirty-page bitmap ([`AtomicBitmap`], one bit per 4 KiB page) that
//! vm-memory sets on every write the VMM itself makes into guest RAM — virtio devices writing
//! used rings and request data from their worker threads, fw_cfg DMA, boot tables. KVM's dirty
//! log sees only the guest's own writes; live migration (`crate::migration`) needs both.

use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use vm_memory::bitmap::{AtomicBitmap, NewBitmap, RefSlice};
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MmapRegion, VolatileSlice,
    mmap::MmapRegionBuilder,
};

/// Guest RAM as the VMM holds it: mmap'd regions, each with a dirty bitmap of the VMM's writes.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<AtomicBitmap>;
/// One region of [`GuestMemoryMmap`].
pub type GuestRegionMmap = vm_memory::GuestRegionMmap<AtomicBitmap>;
/// A checked slice of guest RAM; writes through it (or marked on it) land in the dirty bitmap.
pub type GuestSlice<'a> = VolatileSlice<'a, RefSlice<'a, AtomicBitmap>>;

/// Page size of the dirty bitmaps and of KVM's dirty log.
pub const DIRTY_PAGE_SIZE: u64 = 4096;

use crate::arch::layout::{FIRST_ADDR_PAST_32BITS, MMIO32_START};

/// Smallest guest RAM accepted: room for the boot tables, zero page and a payload at 1 MiB.
pub const MIN_MEMORY_SIZE: u64 = 2 << 20;

/// Errors creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is unusable.
    #[error(
        "guest memory size {size:#x} is invalid: it must be a multiple of 4 KiB and at least {MIN_MEMORY_SIZE:#x}"
    )]
    InvalidSize {
        /// Requested size in bytes.
        size: u64,
    },
    /// `mmap` of a region failed.
    #[error("mmap of {size:#x} bytes for guest RAM at {addr:#x} failed: {source}")]
    Mmap {
        /// Guest-physical start of the region.
        addr: u64,
        /// Region size.
        size: u64,
        /// The mapping error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The regions could not be assembled (overlap; a bug in the layout).
    #[error("assembling guest memory regions failed: {0}")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error(
        "KVM_SET_USER_MEMORY_REGION for slot {slot} (guest {addr:#x}, {size:#x} bytes) failed: {source}"
    )]
    SetUserMemoryRegion {
        /// Memory slot.
        slot: u32,
        /// Guest-physical start.
        addr: u64,
        /// Size in bytes.
        size: u64,
        /// The ioctl error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The guest-physical ranges `(start, size)` that hold `size` bytes of RAM.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    let low = size.min(MMIO32_START);
    let mut ranges = vec![(GuestAddress(0), low)];
    if size > low {
        ranges.push((GuestAddress(FIRST_ADDR_PAST_32BITS), size - low));
    }
    ranges
}

/// How guest RAM is backed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Populate the mapping up front (`MAP_POPULATE`): costs RSS for all of RAM at creation,
    /// saves a host page fault per first touch.
    pub prefault: bool,
}

/// Maps `size` bytes of anonymous guest RAM laid out by [`ram_ranges`].
pub fn create_guest_memory(
    size: u64,
    options: MemoryOptions,
) -> Result<GuestMemoryMmap, MemoryError> {
    if size < MIN_MEMORY_SIZE || !size.is_multiple_of(4096) || usize::try_from(size).is_err() {
        return Err(MemoryError::InvalidSize { size });
    }
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if options.prefault {
        flags |= libc::MAP_POPULATE;
    }
    let regions = ram_ranges(size)
        .into_iter()
        .map(|(addr, len)| {
            let bitmap = AtomicBitmap::with_len(len as usize);
            let mmap: MmapRegion<AtomicBitmap> = MmapRegionBuilder::new_with_bitmap(len as usize, bitmap)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(flags)
                .build()
                .map_err(|source| MemoryError::Mmap {
                    addr: addr.0,
                    size: len,
                    source,
                })?;
            // The region cannot overflow the address space: its end is below 2^64 by construction.
            GuestRegionMmap::new(mmap, addr).ok_or(MemoryError::InvalidSize { size })
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Regions)
}

/// Registers every region of `mem` with KVM, slot numbers in address order.
pub fn register_guest_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    set_dirty_logging(vm, mem, false)
}

/// Registers (again) every region of `mem` with KVM, with `KVM_MEM_LOG_DIRTY_PAGES` if
/// `log_dirty`: turning it on starts KVM's dirty log of the guest's writes (read and cleared by
/// `KVM_GET_DIRTY_LOG`), turning it off stops it.
pub fn set_dirty_logging(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    log_dirty: bool,
) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let addr = region.start_addr().0;
        let size = region.len();
        let userspace_addr = mem
            .get_host_address(region.start_addr())
            .map_err(|_| MemoryError::InvalidSize { size })? as u64;
        let kvm_region = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: addr,
            memory_size: size,
            userspace_addr,
            flags: if log_dirty { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
        };
        // SAFETY: the host range [userspace_addr, +size) is a live mapping owned by `mem`, which
        // the caller keeps alive as long as the VM (the `Vm` owns both and drops the VM fd
        // first). The slot's guest range comes from `ram_ranges`, so slots never overlap.
        unsafe { vm.set_user_memory_region(kvm_region) }.map_err(|source| {
            MemoryError::SetUserMemoryRegion {
                slot,
                addr,
                size,
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vm_memory::Bytes;

    #[test]
    fn small_memory_is_one_low_region() {
        assert_eq!(ram_ranges(64 << 20), vec![(GuestAddress(0), 64 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(
            r,
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
    }

    #[test]
    fn invalid_sizes_are_rejected() {
        assert!(matches!(
            create_guest_memory(4096, MemoryOptions::default()),
            Err(MemoryError::InvalidSize { .. })
        ));
        assert!(matches!(
            create_guest_memory((4 << 20) + 1, MemoryOptions::default()),
            Err(MemoryError::InvalidSize { .. })
        ));
    }

    #[test]
    fn memory_is_readable_and_writable() {
        let mem = create_guest_memory(4 << 20, MemoryOptions { prefault: true }).unwrap();
        mem.write_obj(0xdead_beefu32, GuestAddress(0x3f_fffc))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x3f_fffc)).unwrap(),
            0xdead_beef
        );
        assert!(mem.read_obj::<u32>(GuestAddress(4 << 20)).is_err());
    }

    proptest! {
        #[test]
        fn ranges_cover_size_and_avoid_the_hole(pages in 512u64..(16u64 << 20)) {
            let size = pages * 4096;
            let ranges = ram_ranges(size);
            prop_assert_eq!(ranges.iter().map(|r| r.1).sum::<u64>(), size);
            for (start, len) in ranges {
                let end = start.0 + len;
                prop_assert!(end <= MMIO32_START || start.0 >= FIRST_ADDR_PAST_32BITS);
            }
        }
    }
}
