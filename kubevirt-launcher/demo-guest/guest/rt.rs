//! What `core` expects of a freestanding program: memory routines, a panic handler, zeroed
//! statics.

unsafe extern "C" {
    static mut __bss_start: u8;
    static mut __bss_end: u8;
}

/// Zeroes `.bss` (RAM after the image is not promised to be zero after a reset).
pub fn zero_bss() {
    // SAFETY: the linker script puts .bss in RAM this program owns; nothing has used it yet.
    unsafe {
        let start = &raw mut __bss_start;
        let end = &raw mut __bss_end;
        memset(start, 0, end as usize - start as usize);
    }
}

/// `memcpy`, with `rep movsb` so the compiler cannot turn it into a call to itself.
///
/// # Safety
/// As C's `memcpy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller promises both ranges are valid and do not overlap.
    unsafe {
        core::arch::asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n => _, options(nostack, preserves_flags))
    };
    dst
}

/// `memmove`.
///
/// # Safety
/// As C's `memmove`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: copying forwards is safe when dst is below src or past its end.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: backwards copy with the direction flag, restored before returning.
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _, inout("rcx") n => _, options(nostack))
    };
    dst
}

/// `memset`.
///
/// # Safety
/// As C's `memset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, v: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller promises the range is valid.
    unsafe {
        core::arch::asm!("rep stosb", inout("rdi") dst => _, inout("rcx") n => _, in("al") v as u8, options(nostack, preserves_flags))
    };
    dst
}

/// `memcmp`.
///
/// # Safety
/// As C's `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller promises both ranges are valid for n bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// `bcmp`.
///
/// # Safety
/// As C's `bcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    crate::hw::console::write(b"\ndemo guest: panic\n");
    loop {
        core::hint::spin_loop();
    }
}

/// `core`'s unwind tables name a personality routine; with `panic=abort` nothing unwinds, so
/// it is never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
