//! PVH ELF images of test guests, so other VMMs can boot the very same program.
//!
//! The image is one `PT_LOAD` segment at [`GUEST_LOAD_ADDR`] holding the program, then a stub:
//! identity-map page tables (user-accessible, 2 MiB pages), a GDT, a TSS with a full I/O
//! bitmap and a short 32-bit entry. A `PT_NOTE` carries `XEN_ELFNOTE_PHYS32_ENTRY` pointing at
//! that entry, which a PVH loader jumps to in flat 32-bit protected mode. The stub enables PAE
//! and long mode, loads the GDT and TSS, and `iretq`s to the program at CPL 3 with IOPL 3 and
//! RDI = 0: the same state the VMM's direct entry sets up, plus RSI = the address of the PVH
//! `hvm_start_info` (command line, modules such as an initrd, RSDP). A program whose
//! [`TestGuest::privilege`] is [`Privilege::Kernel`] is entered at CPL 0 instead (the TSS's
//! RSP0 is the stub's stack), to set up its own interrupt handling. For example:
//!
//! ```text
//! qemu-system-x86_64 -machine q35 -m 64 -nographic -no-reboot -kernel hello.elf \
//!     -device isa-debug-exit,iobase=0xf4,iosize=1
//! ```

use iced_x86::code_asm::{CodeAssembler, ax, eax, ebx, ecx, esi, ptr, rax, rdi};

use super::{GUEST_LOAD_ADDR, GUEST_MAX_CODE_SIZE, GUEST_STACK_TOP, TestGuest, TestGuestError};
use crate::arch::gdt::{
    BOOT_GDT_SIZE, KERNEL_CODE_SELECTOR, KERNEL_DATA_SELECTOR, TSS_SELECTOR, USER_CODE_SELECTOR,
    USER_DATA_SELECTOR, gdt_with_tss, tss_bytes,
};
use crate::arch::paging::{IDENTITY_MAP_TABLES_SIZE, PageAccess, identity_map_tables};
use crate::arch::regs::{Privilege, RFLAGS_IOPL3};

/// Where the stub starts: right after the largest program.
pub const STUB_BASE: u64 = GUEST_LOAD_ADDR + GUEST_MAX_CODE_SIZE as u64;
const TABLES: u64 = STUB_BASE;
const GDT: u64 = TABLES + IDENTITY_MAP_TABLES_SIZE as u64;
const GDTR: u64 = GDT + 0x40;
const TSS: u64 = GDT + 0x1000;
const ENTRY32: u64 = TSS + 0x3000;
const ENTRY64: u64 = ENTRY32 + 0x100;
/// The stack the stub uses before dropping to CPL 3 (also the TSS's RSP0).
const STUB_STACK: u64 = GUEST_STACK_TOP - 0x1_0000;

/// `XEN_ELFNOTE_PHYS32_ENTRY`.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// File offset of the loadable segment.
const SEGMENT_OFFSET: usize = 0x1000;

const CR0_PE_NE_PG: u32 = 0x8000_0021;
const CR4_PAE_OSFXSR_OSXMMEXCPT: u32 = 0x620;
const MSR_EFER: u32 = 0xc000_0080;
const EFER_LME: u32 = 1 << 8;

fn assemble(
    name: &'static str,
    bitness: u32,
    ip: u64,
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
) -> Result<Vec<u8>, TestGuestError> {
    let err = |source| TestGuestError::Assemble { name, source };
    let mut a = CodeAssembler::new(bitness).map_err(err)?;
    body(&mut a).map_err(err)?;
    a.assemble(ip).map_err(err)
}

/// The 32-bit PVH entry: paging and long mode on, then a far return into 64-bit code.
fn entry32() -> Result<Vec<u8>, TestGuestError> {
    assemble("pvh stub (32-bit)", 32, ENTRY32, |a| {
        a.lgdt(ptr(GDTR as u32))?;
        a.mov(eax, CR4_PAE_OSFXSR_OSXMMEXCPT)?;
        a.mov(iced_x86::code_asm::cr4, eax)?;
        a.mov(eax, TABLES as u32)?;
        a.mov(iced_x86::code_asm::cr3, eax)?;
        a.mov(ecx, MSR_EFER)?;
        a.rdmsr()?;
        a.or(eax, EFER_LME)?;
        a.wrmsr()?;
        a.mov(eax, CR0_PE_NE_PG)?;
        a.mov(iced_x86::code_asm::cr0, eax)?;
        a.mov(iced_x86::code_asm::esp, STUB_STACK as u32)?;
        a.push(u32::from(KERNEL_CODE_SELECTOR))?;
        a.push(ENTRY64 as u32)?;
        a.retf()
    })
}

/// The 64-bit part: data segments, TSS, and `iretq` to the program at CPL 3 (or at CPL 0 with
/// the kernel selectors, for a [`Privilege::Kernel`] program).
fn entry64(program_entry: u64, privilege: Privilege) -> Result<Vec<u8>, TestGuestError> {
    let (code, data, rflags) = match privilege {
        Privilege::User => (USER_CODE_SELECTOR, USER_DATA_SELECTOR, RFLAGS_IOPL3 | 2),
        Privilege::Kernel => (KERNEL_CODE_SELECTOR, KERNEL_DATA_SELECTOR, 2),
    };
    assemble("pvh stub (64-bit)", 64, ENTRY64, |a| {
        a.mov(ax, u32::from(KERNEL_DATA_SELECTOR))?;
        a.mov(iced_x86::code_asm::ds, ax)?;
        a.mov(iced_x86::code_asm::es, ax)?;
        a.mov(iced_x86::code_asm::ss, ax)?;
        a.mov(ax, u32::from(TSS_SELECTOR))?;
        a.ltr(ax)?;
        // `push imm32` sign-extends to 64 bits; every value here is below 2^31.
        a.push(i32::from(data))?;
        a.push(GUEST_STACK_TOP as i32)?;
        a.push(rflags as i32)?;
        a.push(i32::from(code))?;
        a.mov(rax, program_entry)?;
        a.push(rax)?;
        a.xor(rdi, rdi)?;
        // The PVH loader left the start_info address in EBX; the program finds it in RSI.
        a.mov(esi, ebx)?;
        a.iretq()
    })
}

/// The loadable segment: program, then stub, as bytes for [`GUEST_LOAD_ADDR`] upwards.
fn segment(guest: &TestGuest) -> Result<Vec<u8>, TestGuestError> {
    if guest.code.len() > GUEST_MAX_CODE_SIZE {
        return Err(TestGuestError::TooLarge {
            name: guest.name,
            size: guest.code.len(),
        });
    }
    let e32 = entry32()?;
    let e64 = entry64(guest.entry, guest.privilege)?;
    let end = ENTRY64 as usize + e64.len();
    let mut seg = vec![0u8; end - GUEST_LOAD_ADDR as usize];
    let mut put = |addr: u64, bytes: &[u8]| {
        let at = (addr - GUEST_LOAD_ADDR) as usize;
        seg[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(GUEST_LOAD_ADDR, &guest.code);
    put(TABLES, &identity_map_tables(TABLES, PageAccess::User));
    let gdt: Vec<u8> = gdt_with_tss(TSS)
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    put(GDT, &gdt);
    let mut gdtr = (BOOT_GDT_SIZE - 1).to_le_bytes().to_vec();
    gdtr.extend_from_slice(&(GDT as u32).to_le_bytes());
    put(GDTR, &gdtr);
    put(TSS, &tss_bytes(STUB_STACK));
    put(ENTRY32, &e32);
    put(ENTRY64, &e64);
    Ok(seg)
}

/// The PVH ELF image of `guest`.
pub fn pvh_elf(guest: &TestGuest) -> Result<Vec<u8>, TestGuestError> {
    let seg = segment(guest)?;
    let note_offset = EHDR_SIZE + 2 * PHDR_SIZE;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz: "Xen\0"
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz: the 32-bit entry
    note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(ENTRY32 as u32).to_le_bytes());

    let mut elf = Vec::with_capacity(SEGMENT_OFFSET + seg.len());
    // ELF header.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&guest.entry.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    elf.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let phdr = |elf: &mut Vec<u8>,
                p_type: u32,
                flags: u32,
                offset: usize,
                addr: u64,
                size: usize,
                align: u64| {
        elf.extend_from_slice(&p_type.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        elf.extend_from_slice(&(offset as u64).to_le_bytes());
        elf.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
        elf.extend_from_slice(&addr.to_le_bytes()); // p_paddr
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_filesz
        elf.extend_from_slice(&(size as u64).to_le_bytes()); // p_memsz
        elf.extend_from_slice(&align.to_le_bytes());
    };
    phdr(
        &mut elf,
        PT_LOAD,
        7,
        SEGMENT_OFFSET,
        GUEST_LOAD_ADDR,
        seg.len(),
        0x1000,
    );
    phdr(&mut elf, PT_NOTE, 4, note_offset, 0, note.len(), 4);
    elf.extend_from_slice(&note);
    elf.resize(SEGMENT_OFFSET, 0);
    elf.extend_from_slice(&seg);
    Ok(elf)
}

/// The 32-bit PVH entry address of every image [`pvh_elf`] writes.
pub const PVH_ENTRY: u64 = ENTRY32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::{BootSource, KernelImage, LinuxBoot};
    use crate::memory::{MemoryOptions, create_guest_memory};
    use crate::testguest::programs::hello;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn image_has_elf_magic_and_the_pvh_note() {
        let elf = pvh_elf(&hello().unwrap()).unwrap();
        assert_eq!(&elf[..4], b"\x7fELF");
        let note = EHDR_SIZE + 2 * PHDR_SIZE;
        assert_eq!(
            u32::from_le_bytes(elf[note + 8..note + 12].try_into().unwrap()),
            18
        );
        assert_eq!(&elf[note + 12..note + 16], b"Xen\0");
    }

    #[test]
    fn linux_loader_finds_the_pvh_entry_and_loads_the_program() {
        let guest = hello().unwrap();
        let mem = create_guest_memory(4 << 20, MemoryOptions::default()).unwrap();
        let boot = BootSource::Linux(LinuxBoot {
            kernel: KernelImage::Bytes(pvh_elf(&guest).unwrap()),
            initrd: None,
            cmdline: String::new(),
        });
        let plan = crate::boot::load(&mem, &boot, 1, Some(0xe_0000)).unwrap();
        let entry = plan.entries[0].unwrap();
        assert_eq!(entry.rip, PVH_ENTRY);
        assert_eq!(entry.mode, crate::arch::regs::EntryMode::Protected32);
        let mut code = vec![0u8; guest.code.len()];
        mem.read_slice(&mut code, GuestAddress(GUEST_LOAD_ADDR))
            .unwrap();
        assert_eq!(code, guest.code);
        let pml4: u64 = mem.read_obj(GuestAddress(TABLES)).unwrap();
        assert_eq!(pml4 & !0xfff, TABLES + 0x1000);
        let info: linux_loader::loader::elf::start_info::hvm_start_info = mem
            .read_obj(GuestAddress(crate::arch::layout::PVH_INFO_START))
            .unwrap();
        assert_eq!(
            { info.rsdp_paddr },
            0xe_0000,
            "the kernel is told where the RSDP is"
        );
    }
}
