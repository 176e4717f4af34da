//! Which guest pages changed since the last look: KVM's dirty log (the guest's own writes)
//! merged with the guest-memory bitmaps (the VMM's writes: virtio devices filling buffers and
//! used rings from their threads, which KVM never sees).

use std::sync::atomic::{AtomicBool, Ordering};

use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use vm_memory::bitmap::AtomicBitmap;

use crate::memory::{self, DIRTY_PAGE_SIZE, GuestMemoryMmap, GuestRegionMmap, MemoryError};

/// Test hook (a mutation check): when set, the VMM's own writes are left out of the dirty set,
/// as if only KVM's log were read. A migration of a guest doing virtio I/O must then go wrong.
pub static IGNORE_VMM_WRITES: AtomicBool = AtomicBool::new(false);

/// The bitmap vm-memory keeps of the VMM's writes into `region`.
fn vmm_bitmap(region: &GuestRegionMmap) -> &AtomicBitmap {
    let mmap: &vm_memory::MmapRegion<AtomicBitmap> = region;
    mmap.bitmap()
}

/// Errors reading the dirty log.
#[derive(Debug, thiserror::Error)]
pub enum DirtyLogError {
    /// Turning KVM's dirty logging on or off failed.
    #[error("switching KVM dirty-page logging: {0}")]
    Switch(#[from] MemoryError),
    /// `KVM_GET_DIRTY_LOG` failed.
    #[error("KVM_GET_DIRTY_LOG for memory slot {slot} failed: {source}")]
    Get {
        /// The slot.
        slot: u32,
        /// The kernel's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Dirty-page tracking over a VM's RAM, on from [`DirtyLog::start`] until dropped.
pub struct DirtyLog<'a> {
    vm: &'a VmFd,
    memory: &'a GuestMemoryMmap,
}

impl<'a> DirtyLog<'a> {
    /// Turns KVM's dirty logging on for every RAM slot and clears the VMM-write bitmaps: from
    /// now on every write to guest RAM, by the guest or by the VMM, is seen by
    /// [`DirtyLog::take`].
    ///
    /// # Errors
    /// [`DirtyLogError::Switch`] when KVM refuses the flag.
    pub fn start(vm: &'a VmFd, memory: &'a GuestMemoryMmap) -> Result<Self, DirtyLogError> {
        memory::set_dirty_logging(vm, memory, true)?;
        for region in memory.iter() {
            vmm_bitmap(region).reset();
        }
        Ok(DirtyLog { vm, memory })
    }

    /// The guest-physical addresses of the pages written since the last call (or since
    /// [`DirtyLog::start`]), in address order; clears both logs.
    ///
    /// # Errors
    /// [`DirtyLogError::Get`] when KVM's log cannot be read.
    pub fn take(&self) -> Result<Vec<u64>, DirtyLogError> {
        let ignore_vmm = IGNORE_VMM_WRITES.load(Ordering::Relaxed);
        let mut dirty = Vec::new();
        for (slot, region) in self.memory.iter().enumerate() {
            let slot = slot as u32;
            let size = region.len() as usize;
            let kvm = self
                .vm
                .get_dirty_log(slot, size)
                .map_err(|source| DirtyLogError::Get { slot, source })?;
            let vmm = vmm_bitmap(region).get_and_reset();
            let base = region.start_addr().0;
            let pages = region.len() / DIRTY_PAGE_SIZE;
            for (word_index, kvm_word) in kvm.iter().enumerate() {
                let vmm_word = if ignore_vmm {
                    0
                } else {
                    vmm.get(word_index).copied().unwrap_or(0)
                };
                let mut word = kvm_word | vmm_word;
                while word != 0 {
                    let bit = u64::from(word.trailing_zeros());
                    word &= word - 1;
                    let page = word_index as u64 * 64 + bit;
                    if page < pages {
                        dirty.push(base + page * DIRTY_PAGE_SIZE);
                    }
                }
            }
        }
        Ok(dirty)
    }
}

impl Drop for DirtyLog<'_> {
    fn drop(&mut self) {
        if let Err(e) = memory::set_dirty_logging(self.vm, self.memory, false) {
            log::warn!("turning KVM dirty-page logging off: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryOptions, create_guest_memory, register_guest_memory};
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn vmm_writes_are_seen_and_cleared() {
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let mem = create_guest_memory(4 << 20, MemoryOptions::default()).unwrap();
        register_guest_memory(&vm, &mem).unwrap();
        mem.write_obj(1u8, GuestAddress(0x1234)).unwrap();
        let log = DirtyLog::start(&vm, &mem).unwrap();
        assert!(
            log.take().unwrap().is_empty(),
            "writes before start do not count"
        );
        mem.write_obj(7u64, GuestAddress(0x3000)).unwrap();
        mem.write_slice(&[1u8; 8192], GuestAddress(0x10_0800))
            .unwrap();
        assert_eq!(
            log.take().unwrap(),
            vec![0x3000, 0x10_0000, 0x10_1000, 0x10_2000]
        );
        assert!(log.take().unwrap().is_empty());
    }
}
