//! A split virtqueue, driven by polling.

use crate::dma::Arena;
use crate::hw::mmio::{r16, r32, w16, w32, w64};
use crate::hw::{TICKS_PER_SECOND, rdtsc};
use core::sync::atomic::{Ordering, fence};

/// `VIRTQ_DESC_F_NEXT`.
const F_NEXT: u16 = 1;
/// `VIRTQ_DESC_F_WRITE`: the device writes this buffer.
const F_WRITE: u16 = 2;

/// One buffer of a chain.
#[derive(Clone, Copy)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// The device writes it (else reads it).
    pub device_writes: bool,
}

/// A queue: descriptor table, available ring, used ring.
pub struct Queue {
    index: u16,
    size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
    notify: u64,
    avail_idx: u16,
    last_used: u16,
}

impl Queue {
    /// Allocates the rings for `size` entries.
    pub fn new(index: u16, size: u16, arena: &mut Arena) -> Option<Queue> {
        let n = u64::from(size);
        Some(Queue {
            index,
            size,
            desc: arena.alloc(16 * n, 16)?,
            avail: arena.alloc(6 + 2 * n, 2)?,
            used: arena.alloc(6 + 8 * n, 4)?,
            notify: 0,
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Where notifications for this queue go.
    pub fn with_notify(mut self, notify: u64) -> Queue {
        self.notify = notify;
        self
    }

    /// Entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Writes descriptors `first..first + chain.len()` as one chain.
    pub fn set_chain(&mut self, first: u16, chain: &[Buf]) {
        for (i, b) in chain.iter().enumerate() {
            let d = self.desc + 16 * u64::from(first + i as u16);
            let mut flags = if b.device_writes { F_WRITE } else { 0 };
            if i + 1 < chain.len() {
                flags |= F_NEXT;
            }
            w64(d, b.addr);
            w32(d + 8, b.len);
            w16(d + 12, flags);
            w16(d + 14, first + i as u16 + 1);
        }
    }

    /// Makes the chain at `head` available (no notification).
    pub fn push(&mut self, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        w16(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        fence(Ordering::SeqCst);
        w16(self.avail + 2, self.avail_idx);
    }

    /// Tells the device to look at the queue.
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        w16(self.notify, self.index);
    }

    /// The next (head, length) the device used, if any.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        if r16(self.used + 2) == self.last_used {
            return None;
        }
        fence(Ordering::SeqCst);
        let e = self.used + 4 + 8 * u64::from(self.last_used % self.size);
        self.last_used = self.last_used.wrapping_add(1);
        Some((r32(e) as u16, r32(e + 4)))
    }

    /// Submits `chain` (descriptors from 0) and waits up to a few seconds of this vCPU's own
    /// time for it. The TSC runs on while the VM is paused: a jump far longer than one turn of
    /// the loop is time the vCPU did not run (its VM paused, e.g. holding this very request
    /// under a disk's error policy until space is freed; or its thread not scheduled) and does
    /// not count, so a request the host held completes when the VM resumes, as Linux's
    /// virtio-blk waits for it, rather than failing on a deadline that passed meanwhile.
    pub fn run(&mut self, chain: &[Buf]) -> Option<u32> {
        /// A TSC step longer than this between two turns of the loop is a stall, not waiting.
        const STALL: u64 = TICKS_PER_SECOND / 10;
        self.set_chain(0, chain);
        self.push(0);
        self.notify();
        let mut waited = 0;
        let mut last = rdtsc();
        loop {
            if let Some((_, len)) = self.pop_used() {
                return Some(len);
            }
            let now = rdtsc();
            let step = now.wrapping_sub(last);
            last = now;
            if step < STALL {
                waited += step;
            }
            if waited > 5 * TICKS_PER_SECOND {
                return None;
            }
            core::hint::spin_loop();
        }
    }
}
