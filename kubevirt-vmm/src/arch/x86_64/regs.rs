//! Initial vCPU register state for each entry mode.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};

use super::gdt::{
    BOOT_GDT_SIZE, CODE32_SELECTOR, KERNEL_CODE_SELECTOR, KERNEL_DATA_SELECTOR, TSS_SELECTOR,
    USER_CODE_SELECTOR, USER_DATA_SELECTOR, boot_segment,
};
use super::layout::{BOOT_GDT_START, PML4_START};

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;
/// RFLAGS.IOPL = 3: port I/O allowed at every privilege level.
pub const RFLAGS_IOPL3: u64 = 3 << 12;

/// The privilege level a 64-bit entry starts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// CPL 0, as a kernel expects.
    Kernel,
    /// CPL 3 with IOPL 3: a user-mode payload that still does port I/O. Guest code at CPL 3 runs
    /// natively even under software-virtualising hypervisors where CPL 0 is emulated.
    User,
}

/// The CPU mode a vCPU enters the guest in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with paging on the boot identity map.
    Long64(Privilege),
    /// 32-bit flat protected mode, paging off: the PVH entry.
    Protected32,
    /// The state after RESET: real mode, CS base 0xFFFF0000 (with `rip` 0xFFF0: the reset
    /// vector 0xFFFFFFF0), where firmware starts. Set explicitly, as QEMU does, rather than
    /// trusting whatever state a new vCPU comes in.
    RealModeReset,
}

/// Everything that differs between entries: mode, instruction and stack pointers and the few
/// general registers boot protocols use to pass a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// CPU mode at entry.
    pub mode: EntryMode,
    /// First instruction.
    pub rip: u64,
    /// Initial stack pointer.
    pub rsp: u64,
    /// RSI: the zero page for the Linux 64-bit boot protocol.
    pub rsi: u64,
    /// RBX: `hvm_start_info` for PVH.
    pub rbx: u64,
    /// RDI: the vCPU index for direct payloads.
    pub rdi: u64,
}

impl EntryState {
    /// An entry at `rip` with `rsp`, every other register zero.
    pub fn new(mode: EntryMode, rip: u64, rsp: u64) -> Self {
        EntryState {
            mode,
            rip,
            rsp,
            rsi: 0,
            rbx: 0,
            rdi: 0,
        }
    }
}

/// Special registers for `mode`, starting from what KVM reported (so fields we do not own, like
/// the APIC base, keep their values).
pub fn sregs_for(mode: EntryMode, mut sregs: kvm_sregs) -> kvm_sregs {
    if mode == EntryMode::RealModeReset {
        return reset_sregs(sregs);
    }
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = BOOT_GDT_SIZE - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.tr = boot_segment(TSS_SELECTOR);
    let (code, data) = match mode {
        EntryMode::Long64(Privilege::Kernel) => (KERNEL_CODE_SELECTOR, KERNEL_DATA_SELECTOR),
        EntryMode::Long64(Privilege::User) => (USER_CODE_SELECTOR, USER_DATA_SELECTOR),
        EntryMode::Protected32 | EntryMode::RealModeReset => {
            (CODE32_SELECTOR, KERNEL_DATA_SELECTOR)
        }
    };
    sregs.cs = boot_segment(code);
    let data = boot_segment(data);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    match mode {
        EntryMode::Long64(_) => {
            sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        EntryMode::Protected32 | EntryMode::RealModeReset => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    sregs
}

/// A real-mode segment register: `selector`, base `selector << 4` unless given, 64 KiB limit.
fn real_mode_segment(selector: u16, base: u64, type_: u8) -> kvm_segment {
    kvm_segment {
        base,
        limit: 0xffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The architectural state after RESET (Intel SDM vol. 3, 10.1.1), keeping the APIC base.
fn reset_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.cs = real_mode_segment(0xf000, 0xffff_0000, 0xb);
    let data = real_mode_segment(0, 0, 0x3);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment {
        type_: 0xb,
        s: 0,
        ..real_mode_segment(0, 0, 0xb)
    };
    sregs.ldt = kvm_segment {
        type_: 0x2,
        s: 0,
        ..real_mode_segment(0, 0, 0x2)
    };
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0xffff;
    sregs.idt.base = 0;
    sregs.idt.limit = 0xffff;
    sregs.cr0 = CR0_CD | CR0_NW | CR0_ET;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.cr8 = 0;
    sregs.efer = 0;
    sregs
}

/// General registers for `entry`.
pub fn regs_for(entry: &EntryState) -> kvm_regs {
    let rflags = match entry.mode {
        EntryMode::Long64(Privilege::User) => RFLAGS_RESERVED | RFLAGS_IOPL3,
        _ => RFLAGS_RESERVED,
    };
    kvm_regs {
        rip: entry.rip,
        rsp: entry.rsp,
        rbp: entry.rsp,
        rsi: entry.rsi,
        rbx: entry.rbx,
        rdi: entry.rdi,
        rflags,
        ..Default::default()
    }
}

/// The FPU state after `FNINIT` with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_user_entry() {
        let s = sregs_for(EntryMode::Long64(Privilege::User), kvm_sregs::default());
        assert_eq!(s.cs.dpl, 3);
        assert_eq!(s.ss.dpl, 3);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.cr3, PML4_START);
        let r = regs_for(&EntryState::new(
            EntryMode::Long64(Privilege::User),
            0x10_0000,
            0x8000,
        ));
        assert_eq!(r.rflags & RFLAGS_IOPL3, RFLAGS_IOPL3);
        assert_eq!(r.rip, 0x10_0000);
    }

    #[test]
    fn long_mode_kernel_entry_uses_boot_selectors() {
        let s = sregs_for(EntryMode::Long64(Privilege::Kernel), kvm_sregs::default());
        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(s.ds.selector, 0x18);
        assert_eq!(s.cs.dpl, 0);
        let r = regs_for(&EntryState::new(
            EntryMode::Long64(Privilege::Kernel),
            0x20_0200,
            0x8ff0,
        ));
        assert_eq!(r.rflags, 2);
    }

    #[test]
    fn protected_mode_entry_has_paging_off() {
        let s = sregs_for(EntryMode::Protected32, kvm_sregs::default());
        assert_eq!(s.cr0 & CR0_PG, 0);
        assert_ne!(s.cr0 & CR0_PE, 0);
        assert_eq!(s.efer, 0);
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
    }

    #[test]
    fn the_reset_state_is_real_mode_at_the_reset_vector() {
        let s = sregs_for(EntryMode::RealModeReset, kvm_sregs::default());
        assert_eq!(s.cr0 & CR0_PE, 0);
        assert_eq!((s.cs.selector, s.cs.base), (0xf000, 0xffff_0000));
        assert_eq!((s.es.selector, s.es.base, s.es.unusable), (0, 0, 0));
        let r = regs_for(&EntryState::new(EntryMode::RealModeReset, 0xfff0, 0));
        assert_eq!(s.cs.base + r.rip, 0xffff_fff0);
        assert_eq!(r.rflags, 2);
    }

    #[test]
    fn apic_base_is_preserved() {
        let before = kvm_sregs {
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        assert_eq!(
            sregs_for(EntryMode::Protected32, before).apic_base,
            0xfee0_0900
        );
    }
}
