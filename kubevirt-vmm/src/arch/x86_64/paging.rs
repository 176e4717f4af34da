//! Boot page tables: an identity map of the low 4 GiB with 2 MiB pages.
//!
//! 1 GiB pages are avoided on purpose: some hypervisors (KVM on PVM) end the VM on first use of
//! one, and 2 MiB pages cost a handful of extra page-directory pages only.

use vm_memory::{Bytes, GuestAddress};
use crate::memory::GuestMemoryMmap;

use super::layout::{MMIO32_START, PAGE_SIZE_2M, PD_START, PDPT_START, PML4_START};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE_PAGE: u64 = 1 << 7;

/// Number of page directories: one per GiB of the identity map.
pub const PD_COUNT: u64 = 4;

/// Who may use the boot mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageAccess {
    /// Supervisor only: what a kernel expects.
    Supervisor,
    /// User-accessible as well, so a payload running at CPL 3 can reach all of RAM and the
    /// device MMIO hole (the test-guest model).
    User,
}

/// The page-table entry for the 2 MiB page at `addr`: MMIO-hole pages are uncached.
pub fn pde_for(addr: u64, access: PageAccess) -> u64 {
    let mut entry = addr | PRESENT | WRITABLE | HUGE_PAGE;
    if access == PageAccess::User {
        entry |= USER;
    }
    if addr >= MMIO32_START {
        entry |= CACHE_DISABLE | WRITE_THROUGH;
    }
    entry
}

/// Size of the tables [`identity_map_tables`] builds: PML4, PDPT and the page directories.
pub const IDENTITY_MAP_TABLES_SIZE: usize = (2 + PD_COUNT as usize) * 0x1000;

/// The identity map of `[0, 4 GiB)` as bytes to place at guest-physical `base` (page-aligned):
/// the PML4 at `base`, the PDPT at `base + 4 KiB`, the page directories after it.
pub fn identity_map_tables(base: u64, access: PageAccess) -> Vec<u8> {
    let table_flags = PRESENT | WRITABLE | if access == PageAccess::User { USER } else { 0 };
    let mut tables = vec![0u8; IDENTITY_MAP_TABLES_SIZE];
    let mut put = |offset: usize, value: u64| {
        tables[offset..offset + 8].copy_from_slice(&value.to_le_bytes())
    };
    put(0, (base + 0x1000) | table_flags);
    for gib in 0..PD_COUNT {
        let pd_offset = 0x2000 + gib * 0x1000;
        put(0x1000 + gib as usize * 8, (base + pd_offset) | table_flags);
        for i in 0..512u64 {
            put(
                (pd_offset + i * 8) as usize,
                pde_for((gib << 30) + i * PAGE_SIZE_2M, access),
            );
        }
    }
    tables
}

/// Writes the identity map of `[0, 4 GiB)` at [`PML4_START`] and returns the value for CR3.
pub fn write_identity_map(
    mem: &GuestMemoryMmap,
    access: PageAccess,
) -> vm_memory::GuestMemoryResult<u64> {
    mem.write_slice(
        &identity_map_tables(PML4_START, access),
        GuestAddress(PML4_START),
    )?;
    Ok(PML4_START)
}

const _: () = assert!(PDPT_START == PML4_START + 0x1000 && PD_START == PML4_START + 0x2000);

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// Walks the tables the way the MMU does and returns the physical address for `va`.
    fn walk(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> (u64, u64) {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(cr3 + ((va >> 39) & 511) * 8))
            .unwrap();
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 511) * 8))
            .unwrap();
        assert_eq!(pdpte & HUGE_PAGE, 0, "no 1 GiB pages");
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 511) * 8))
            .unwrap();
        assert_ne!(pde & HUGE_PAGE, 0);
        (
            (pde & !0x1f_ffff & !(1 << 63) & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff),
            pml4e & pdpte & pde,
        )
    }

    #[test]
    fn identity_maps_ram_and_the_mmio_hole() {
        let mem = mem();
        let cr3 = write_identity_map(&mem, PageAccess::User).unwrap();
        for va in [
            0u64,
            0x1234,
            0x10_0000,
            0x3fff_ffff,
            0xd000_0000,
            0xfee0_0000,
            0xffff_ffff,
        ] {
            let (pa, flags) = walk(&mem, cr3, va);
            assert_eq!(pa, va);
            assert_eq!(
                flags & (PRESENT | WRITABLE | USER),
                PRESENT | WRITABLE | USER
            );
        }
    }

    #[test]
    fn supervisor_map_has_no_user_bit() {
        let mem = mem();
        let cr3 = write_identity_map(&mem, PageAccess::Supervisor).unwrap();
        let (_, flags) = walk(&mem, cr3, 0x20_0000);
        assert_eq!(flags & USER, 0);
    }

    #[test]
    fn hole_is_uncached_and_ram_is_not() {
        assert_ne!(pde_for(0xfee0_0000, PageAccess::User) & CACHE_DISABLE, 0);
        assert_eq!(pde_for(0x20_0000, PageAccess::User) & CACHE_DISABLE, 0);
    }
}
