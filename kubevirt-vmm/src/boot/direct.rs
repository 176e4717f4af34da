//! Direct 64-bit entry: a flat payload copied into RAM and entered in long mode on every vCPU.
//!
//! This is how test guests (and any payload that brings no boot protocol) start: the VMM does
//! what firmware and a bootloader would, so the guest runs its first instruction in 64-bit
//! mode, at CPL 3 if asked, with RDI = vCPU index and a stack of its own per vCPU.

use vm_memory::{Bytes, GuestAddress};
use crate::memory::GuestMemoryMmap;

use super::{BootError, BootPlan};
use crate::arch::paging::PageAccess;
use crate::arch::regs::{EntryMode, EntryState, Privilege};

/// Bytes between the initial stack pointers of consecutive vCPUs.
pub const DIRECT_STACK_STRIDE: u64 = 0x4000;

/// A flat binary entered in 64-bit mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectBoot {
    /// The payload bytes.
    pub image: Vec<u8>,
    /// Guest-physical (= virtual, identity-mapped) address to copy it to.
    pub load_addr: u64,
    /// Address of the first instruction.
    pub entry: u64,
    /// Initial RSP of vCPU 0; vCPU *i* gets `stack_top - i * DIRECT_STACK_STRIDE`.
    pub stack_top: u64,
    /// Privilege level to start at. [`Privilege::User`] also makes the boot mappings
    /// user-accessible.
    pub privilege: Privilege,
}

pub(super) fn load(
    mem: &GuestMemoryMmap,
    boot: &DirectBoot,
    vcpus: usize,
) -> Result<BootPlan, BootError> {
    let size = boot.image.len() as u64;
    if boot.entry < boot.load_addr || boot.entry - boot.load_addr >= size {
        return Err(BootError::EntryOutsideImage {
            entry: boot.entry,
            load_addr: boot.load_addr,
            size: boot.image.len(),
        });
    }
    mem.write_slice(&boot.image, GuestAddress(boot.load_addr))
        .map_err(|source| BootError::WriteImage {
            what: "payload",
            addr: boot.load_addr,
            source,
        })?;
    let lowest_stack = boot
        .stack_top
        .checked_sub(DIRECT_STACK_STRIDE * vcpus as u64);
    if lowest_stack.is_none() {
        return Err(BootError::StackTooLow {
            stack_top: boot.stack_top,
            vcpus,
        });
    }
    let entries = (0..vcpus)
        .map(|i| {
            let mut e = EntryState::new(
                EntryMode::Long64(boot.privilege),
                boot.entry,
                boot.stack_top - DIRECT_STACK_STRIDE * i as u64,
            );
            e.rdi = i as u64;
            Some(e)
        })
        .collect();
    let access = match boot.privilege {
        Privilege::User => PageAccess::User,
        Privilege::Kernel => PageAccess::Supervisor,
    };
    Ok(BootPlan {
        entries,
        page_access: access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap()
    }

    fn boot() -> DirectBoot {
        DirectBoot {
            image: vec![0x90, 0xf4],
            load_addr: 0x10_0000,
            entry: 0x10_0000,
            stack_top: 0x20_0000,
            privilege: Privilege::User,
        }
    }

    #[test]
    fn every_vcpu_gets_its_own_stack_and_index() {
        let mem = mem();
        let plan = load(&mem, &boot(), 3).unwrap();
        let rsps: Vec<u64> = plan.entries.iter().map(|e| e.unwrap().rsp).collect();
        assert_eq!(rsps, vec![0x20_0000, 0x1f_c000, 0x1f_8000]);
        assert_eq!(plan.entries[2].unwrap().rdi, 2);
        assert_eq!(plan.page_access, PageAccess::User);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x10_0001)).unwrap(), 0xf4);
    }

    #[test]
    fn entry_outside_the_image_is_refused() {
        let mut b = boot();
        b.entry = 0x10_0002;
        assert!(matches!(
            load(&mem(), &b, 1),
            Err(BootError::EntryOutsideImage { .. })
        ));
    }

    #[test]
    fn image_outside_ram_names_the_address() {
        let mut b = boot();
        b.load_addr = 8 << 20;
        b.entry = 8 << 20;
        let err = load(&mem(), &b, 1).unwrap_err();
        assert!(err.to_string().contains("0x800000"), "{err}");
    }
}
