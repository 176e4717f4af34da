//! Segment descriptors: the boot GDT, the boot TSS and their `kvm_segment` forms.

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress};
use crate::memory::GuestMemoryMmap;

use super::layout::{BOOT_GDT_START, BOOT_TSS_START};

/// Selector of the flat 32-bit code segment (PVH entry).
pub const CODE32_SELECTOR: u16 = 0x08;
/// Selector of the 64-bit kernel code segment (`__BOOT_CS` of the Linux boot protocol).
pub const KERNEL_CODE_SELECTOR: u16 = 0x10;
/// Selector of the kernel data segment (`__BOOT_DS`).
pub const KERNEL_DATA_SELECTOR: u16 = 0x18;
/// Selector of the user (DPL 3) data segment, RPL 3 included.
pub const USER_DATA_SELECTOR: u16 = 0x20 | 3;
/// Selector of the user (DPL 3) 64-bit code segment, RPL 3 included.
pub const USER_CODE_SELECTOR: u16 = 0x28 | 3;
/// Selector of the boot TSS (a 16-byte system descriptor).
pub const TSS_SELECTOR: u16 = 0x30;

/// Size of the TSS proper, before its I/O permission bitmap.
const TSS_HEADER_SIZE: u64 = 0x68;
/// Size of an I/O permission bitmap covering all 65536 ports, plus its 0xff terminator.
const IO_BITMAP_SIZE: u64 = 8192 + 1;
/// Limit of the boot TSS: header plus full I/O bitmap.
pub const TSS_LIMIT: u32 = (TSS_HEADER_SIZE + IO_BITMAP_SIZE - 1) as u32;
/// Offset of RSP0 inside a 64-bit TSS.
const TSS_RSP0_OFFSET: u64 = 4;
/// Offset of the I/O map base field inside a 64-bit TSS.
const TSS_IOMAP_BASE_OFFSET: u64 = 0x66;

/// Builds a code/data segment descriptor from flags (bits 8..16 access byte, 12..16 of the
/// high nibble: G, D/B, L, AVL), base and limit, in the layout the CPU reads.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT, indexed by selector / 8. The TSS descriptor takes two slots.
pub fn boot_gdt() -> [u64; 8] {
    gdt_with_tss(BOOT_TSS_START)
}

/// The boot GDT with its TSS descriptor pointing at `tss_base`.
pub fn gdt_with_tss(tss_base: u64) -> [u64; 8] {
    let (tss_low, tss_high) = tss_descriptor(tss_base, TSS_LIMIT);
    [
        0,                             // 0x00: null
        gdt_entry(0xc09b, 0, 0xfffff), // 0x08: 32-bit flat code, DPL 0
        gdt_entry(0xa09b, 0, 0xfffff), // 0x10: 64-bit code, DPL 0
        gdt_entry(0xc093, 0, 0xfffff), // 0x18: flat data, DPL 0
        gdt_entry(0xc0f3, 0, 0xfffff), // 0x20: flat data, DPL 3
        gdt_entry(0xa0fb, 0, 0xfffff), // 0x28: 64-bit code, DPL 3
        tss_low,                       // 0x30: available 64-bit TSS
        tss_high,
    ]
}

/// The two 8-byte halves of a 64-bit TSS descriptor (type 9, present, DPL 0).
pub const fn tss_descriptor(base: u64, limit: u32) -> (u64, u64) {
    let low = gdt_entry(0x0089, base as u32, limit);
    (low, base >> 32)
}

fn descriptor_base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32) | ((entry & 0x0000_00ff_ffff_0000) >> 16)
}

fn descriptor_limit(entry: u64) -> u32 {
    (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32
}

/// Converts a GDT descriptor into the segment register KVM expects, as if `selector` had been
/// loaded from it. The limit is scaled by the granularity bit the way the CPU does.
pub fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = descriptor_limit(entry);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base: descriptor_base(entry),
        limit,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

/// The segment register for `selector` in the boot GDT. The TSS comes back busy (type 11), as
/// the CPU leaves it after `ltr` and as VM entry requires.
pub fn boot_segment(selector: u16) -> kvm_segment {
    let gdt = boot_gdt();
    let index = usize::from(selector >> 3);
    let mut seg = segment_from_gdt(gdt[index], selector);
    if selector == TSS_SELECTOR {
        seg.base |= gdt[index + 1] << 32;
        seg.type_ = 0xb;
    }
    seg
}

/// Writes the boot GDT and the boot TSS into guest memory. The TSS carries an all-zero I/O
/// permission bitmap, so port I/O from CPL 3 is allowed even where a hypervisor ignores
/// RFLAGS.IOPL, and `rsp0` as the stack for interrupts taken from CPL 3.
pub fn write_boot_gdt_and_tss(
    mem: &GuestMemoryMmap,
    rsp0: u64,
) -> vm_memory::GuestMemoryResult<()> {
    for (i, entry) in boot_gdt().iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + 8 * i as u64))?;
    }
    mem.write_slice(&tss_bytes(rsp0), GuestAddress(BOOT_TSS_START))
}

/// A 64-bit TSS with `rsp0` and an I/O permission bitmap allowing every port.
pub fn tss_bytes(rsp0: u64) -> Vec<u8> {
    let mut tss = vec![0u8; (TSS_HEADER_SIZE + IO_BITMAP_SIZE) as usize];
    let rsp0_at = TSS_RSP0_OFFSET as usize;
    tss[rsp0_at..rsp0_at + 8].copy_from_slice(&rsp0.to_le_bytes());
    let iomap_at = TSS_IOMAP_BASE_OFFSET as usize;
    tss[iomap_at..iomap_at + 2].copy_from_slice(&(TSS_HEADER_SIZE as u16).to_le_bytes());
    if let Some(last) = tss.last_mut() {
        *last = 0xff;
    }
    tss
}

/// Size in bytes of the boot GDT, for the GDTR limit (limit = size - 1).
pub const BOOT_GDT_SIZE: u16 = 8 * 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_code_segment_is_64_bit_ring_0() {
        let seg = boot_segment(KERNEL_CODE_SELECTOR);
        assert_eq!(
            (seg.l, seg.db, seg.dpl, seg.type_, seg.present, seg.s),
            (1, 0, 0, 0xb, 1, 1)
        );
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.base, 0);
    }

    #[test]
    fn user_segments_are_ring_3() {
        let cs = boot_segment(USER_CODE_SELECTOR);
        let ss = boot_segment(USER_DATA_SELECTOR);
        assert_eq!((cs.dpl, cs.l, cs.selector & 3), (3, 1, 3));
        assert_eq!((ss.dpl, ss.type_, ss.db, ss.selector & 3), (3, 3, 1, 3));
    }

    #[test]
    fn code32_segment_is_flat_32_bit() {
        let seg = boot_segment(CODE32_SELECTOR);
        assert_eq!((seg.l, seg.db, seg.g, seg.limit), (0, 1, 1, 0xffff_ffff));
    }

    #[test]
    fn tss_segment_is_busy_and_covers_the_io_bitmap() {
        let tr = boot_segment(TSS_SELECTOR);
        assert_eq!(tr.base, BOOT_TSS_START);
        assert_eq!(tr.limit, TSS_LIMIT);
        assert_eq!((tr.type_, tr.s, tr.present, tr.g), (0xb, 0, 1, 0));
    }

    #[test]
    fn descriptor_fields_round_trip() {
        let entry = gdt_entry(0xc093, 0x1234_5678, 0xabcde);
        assert_eq!(descriptor_base(entry), 0x1234_5678);
        assert_eq!(descriptor_limit(entry), 0xabcde);
    }

    #[test]
    fn boot_tables_are_written() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        write_boot_gdt_and_tss(&mem, 0x8000).unwrap();
        let code: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 0x10)).unwrap();
        assert_eq!(code, boot_gdt()[2]);
        let iomap: u16 = mem.read_obj(GuestAddress(BOOT_TSS_START + 0x66)).unwrap();
        assert_eq!(iomap, 0x68);
        let rsp0: u64 = mem.read_obj(GuestAddress(BOOT_TSS_START + 4)).unwrap();
        assert_eq!(rsp0, 0x8000);
        let port_3f8: u8 = mem
            .read_obj(GuestAddress(BOOT_TSS_START + 0x68 + 0x3f8 / 8))
            .unwrap();
        assert_eq!(port_3f8, 0, "port 0x3f8 must be allowed");
    }
}
