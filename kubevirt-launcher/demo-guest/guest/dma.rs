//! Memory the devices read and write: a bump allocator over a fixed window of guest RAM (the
//! guest needs at least 4 MiB; nothing here is ever freed).

use crate::hw::mmio;

const START: u64 = 0x30_0000;
const END: u64 = 0x40_0000;

/// The window.
pub struct Arena {
    next: u64,
}

impl Arena {
    /// The whole window, unused.
    pub const fn new() -> Arena {
        Arena { next: START }
    }

    /// `size` zeroed bytes aligned to `align` (a power of two), or `None` when full.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let at = self.next.next_multiple_of(align);
        if at + size > END {
            return None;
        }
        self.next = at + size;
        // SAFETY: the window is RAM nobody else uses and this range was never handed out.
        unsafe { mmio::bytes(at, size as usize) }.fill(0);
        Some(at)
    }
}
