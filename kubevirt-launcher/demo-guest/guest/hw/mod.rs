//! The hardware as a CPL 3 program with IOPL 3 sees it: port I/O, identity-mapped MMIO, the
//! time-stamp counter.

pub mod acpi;
pub mod console;
pub mod irq;
pub mod pci;
pub mod pvh;
pub mod random;
pub mod smbios;

/// `out dx, al`.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O at CPL 3 with IOPL 3 touches no memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}

/// `in al, dx`.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    }
    v
}

/// `out dx, eax`.
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    }
}

/// `in eax, dx`.
pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as for `outb`.
    unsafe {
        core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    }
    v
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter; CR4.TSD is clear, so CPL 3 may.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Rough TSC ticks in a second: enough for retry timers (nothing here needs wall time).
pub const TICKS_PER_SECOND: u64 = 2_000_000_000;

/// Volatile accesses to physical addresses (identity-mapped: guest RAM, BARs, ACPI tables).
pub mod mmio {
    macro_rules! accessors {
        ($($read:ident $write:ident $t:ty),*) => {$(
            /// Reads at physical address `a`.
            pub fn $read(a: u64) -> $t {
                // SAFETY: the identity map covers the low 4 GiB; callers pass addresses of
                // RAM they own, BARs the VMM assigned or firmware tables.
                unsafe { (a as *const $t).read_volatile() }
            }
            /// Writes at physical address `a`.
            pub fn $write(a: u64, v: $t) {
                // SAFETY: as for the read.
                unsafe { (a as *mut $t).write_volatile(v) }
            }
        )*};
    }
    accessors!(r8 w8 u8, r16 w16 u16, r32 w32 u32);

    /// A 64-bit field as two 32-bit reads (virtio allows it; it is how the VMM sees it).
    pub fn r64(a: u64) -> u64 {
        u64::from(r32(a)) | (u64::from(r32(a + 4)) << 32)
    }

    /// A 64-bit field as two 32-bit writes, low half first.
    pub fn w64(a: u64, v: u64) {
        w32(a, v as u32);
        w32(a + 4, (v >> 32) as u32);
    }

    /// `len` bytes at `a` as a slice.
    ///
    /// # Safety
    /// `a..a+len` must be RAM this program owns and nothing else may write it meanwhile
    /// (a device only writes buffers the driver has handed it).
    pub unsafe fn bytes<'a>(a: u64, len: usize) -> &'a mut [u8] {
        // SAFETY: the caller's promise.
        unsafe { core::slice::from_raw_parts_mut(a as *mut u8, len) }
    }
}
