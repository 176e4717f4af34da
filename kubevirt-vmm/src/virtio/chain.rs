//! Checking a descriptor chain before a device acts on it.
//!
//! rust-vmm's virtio-queue walks a chain safely whatever the driver wrote: it stops after as
//! many descriptors as the queue has (a loop), at a `next` index past the table, at an indirect
//! table that is misaligned, nested or unreadable, and at a chain longer than 4 GiB — but it
//! stops silently, handing the device a shorter chain than the driver made. Each of those, and
//! a buffer outside guest memory, is a chain the virtio spec (1.2, 2.7.5 and 2.7.5.3) forbids
//! the driver to make: the device is then in an error state only a reset ends, and reports it
//! as 2.1.2 says (`DEVICE_NEEDS_RESET`, then a configuration change notification), as QEMU's
//! `virtio_error` does for the same chains.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::memory::GuestMemoryMmap;

/// Why a chain is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The head index is past the descriptor table, or the head is an indirect descriptor
    /// whose table cannot be used.
    #[error(
        "chain {head}: no descriptor at the head (index past the table, or a bad indirect table)"
    )]
    Empty {
        /// The chain's head index.
        head: u16,
    },
    /// The walk stopped at a descriptor that still says "next": a loop, a chain longer than
    /// the queue, a `next` index past the table, a nested or misaligned indirect table, or
    /// more than 4 GiB of buffers.
    #[error(
        "chain {head}: ends after {descriptors} descriptors at one that has a next (a loop, a next index past the table, a bad indirect table or a chain over 4 GiB)"
    )]
    Truncated {
        /// The chain's head index.
        head: u16,
        /// Descriptors walked before it stopped.
        descriptors: u32,
    },
    /// A buffer is not (entirely) guest RAM.
    #[error("chain {head}: buffer {addr:#x}+{len} is outside guest memory")]
    OutsideMemory {
        /// The chain's head index.
        head: u16,
        /// The buffer's guest-physical address.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// Checks `chain` (walking a copy of it): every descriptor it reaches lies in `memory`, and
/// the walk ends at a descriptor without `VIRTQ_DESC_F_NEXT`.
///
/// # Errors
/// [`ChainError`] naming what is wrong: the device must treat it as the driver's error and
/// ask for a reset.
pub fn check_chain<M>(
    chain: &DescriptorChain<M>,
    memory: &GuestMemoryMmap,
) -> Result<(), ChainError>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    let head = chain.head_index();
    let mut descriptors = 0u32;
    let mut last_has_next = None;
    for d in chain.clone() {
        descriptors += 1;
        if d.len() > 0 && !memory.check_range(GuestAddress(d.addr().0), d.len() as usize) {
            return Err(ChainError::OutsideMemory {
                head,
                addr: d.addr().0,
                len: d.len(),
            });
        }
        last_has_next = Some(d.has_next());
    }
    match last_has_next {
        None => Err(ChainError::Empty { head }),
        Some(true) => Err(ChainError::Truncated { head, descriptors }),
        Some(false) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::QueueOwnedT;
    use vm_memory::Bytes;

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const MEM: u64 = 0x10_0000;
    const SIZE: u16 = 8;
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const INDIRECT: u16 = 4;

    /// Puts `descs` in the table, makes head 0 available and checks that chain.
    fn check(descs: &[(u64, u32, u16, u16)]) -> Result<(), ChainError> {
        check_head(descs, 0)
    }

    fn check_head(descs: &[(u64, u32, u16, u16)], head: u16) -> Result<(), ChainError> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            mem.write_obj(
                Descriptor::new(addr, len, flags, next),
                GuestAddress(DESC + 16 * i as u64),
            )
            .unwrap();
        }
        mem.write_obj(head, GuestAddress(AVAIL + 4)).unwrap();
        mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        let mut q = crate::virtio::test_utils::ready_queue(SIZE, DESC, AVAIL, USED);
        let chain = q.iter(&mem).unwrap().next().unwrap();
        check_chain(&chain, &mem)
    }

    #[test]
    fn well_formed_chains_pass() {
        assert_eq!(
            check(&[
                (0x8000, 16, NEXT, 1),
                (0x9000, 512, WRITE | NEXT, 2),
                (0xa000, 1, WRITE, 0)
            ]),
            Ok(())
        );
        // A zero-length buffer anywhere is no access.
        assert_eq!(check(&[(u64::MAX, 0, 0, 0)]), Ok(()));
        // Through an indirect table of two entries.
        let mem_table = [(0x4000, 32, INDIRECT, 0)];
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        mem.write_obj(Descriptor::new(0x8000, 16, NEXT, 1), GuestAddress(0x4000))
            .unwrap();
        mem.write_obj(Descriptor::new(0x9000, 1, WRITE, 0), GuestAddress(0x4010))
            .unwrap();
        for (i, &(addr, len, flags, next)) in mem_table.iter().enumerate() {
            mem.write_obj(
                Descriptor::new(addr, len, flags, next),
                GuestAddress(DESC + 16 * i as u64),
            )
            .unwrap();
        }
        mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        let mut q = crate::virtio::test_utils::ready_queue(SIZE, DESC, AVAIL, USED);
        let chain = q.iter(&mem).unwrap().next().unwrap();
        assert_eq!(check_chain(&chain, &mem), Ok(()));
    }

    #[test]
    fn loops_bad_indices_bad_tables_and_foreign_buffers_are_malformed() {
        // 0 -> 1 -> 0 -> ...: stops after the queue's size.
        assert_eq!(
            check(&[(0x8000, 16, NEXT, 1), (0x9000, 16, NEXT, 0)]),
            Err(ChainError::Truncated {
                head: 0,
                descriptors: u32::from(SIZE)
            })
        );
        assert_eq!(
            check(&[(0x8000, 16, NEXT, SIZE + 3)]),
            Err(ChainError::Truncated {
                head: 0,
                descriptors: 1
            })
        );
        assert_eq!(check_head(&[], SIZE), Err(ChainError::Empty { head: SIZE }));
        // An indirect table whose length is no multiple of 16, or outside memory.
        assert_eq!(
            check(&[(0x4000, 20, INDIRECT, 0)]),
            Err(ChainError::Empty { head: 0 })
        );
        assert_eq!(
            check(&[(MEM, 32, INDIRECT, 0)]),
            Err(ChainError::Empty { head: 0 })
        );
        assert_eq!(
            check(&[(MEM - 8, 64, 0, 0)]),
            Err(ChainError::OutsideMemory {
                head: 0,
                addr: MEM - 8,
                len: 64
            })
        );
        assert_eq!(
            check(&[(0x8000, 16, NEXT, 1), (u64::MAX - 4, 16, WRITE, 0)]),
            Err(ChainError::OutsideMemory {
                head: 0,
                addr: u64::MAX - 4,
                len: 16
            })
        );
    }
}
