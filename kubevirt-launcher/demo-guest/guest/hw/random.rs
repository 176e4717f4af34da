//! Randomness for the SSH server (host key, key exchange, padding): the CPU's RDRAND, which
//! CPL 3 may execute (it is no privileged instruction and exits to no VMM).

use core::sync::atomic::{AtomicU8, Ordering};

/// RDRAND: unknown (0), present (1), absent (2).
static RDRAND: AtomicU8 = AtomicU8::new(0);

/// Whether the CPU has RDRAND (CPUID.1:ECX bit 30).
pub fn available() -> bool {
    match RDRAND.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ecx = core::arch::x86_64::__cpuid(1).ecx;
            let present = ecx & (1 << 30) != 0;
            RDRAND.store(if present { 1 } else { 2 }, Ordering::Relaxed);
            present
        }
    }
}

/// One 64-bit random value; `None` when RDRAND failed ten times in a row (Intel's advice) or
/// is absent.
fn next() -> Option<u64> {
    if !available() {
        return None;
    }
    for _ in 0..10 {
        let (v, ok): (u64, u8);
        // SAFETY: RDRAND exists (checked above); it only writes the named registers.
        unsafe {
            core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
        };
        if ok == 1 {
            return Some(v);
        }
    }
    None
}

/// Fills `buf`; false when no randomness is to be had.
pub fn fill(buf: &mut [u8]) -> bool {
    for chunk in buf.chunks_mut(8) {
        let Some(v) = next() else { return false };
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    true
}

/// `getrandom`'s custom backend (the guest is built with `getrandom_backend="custom"`).
///
/// # Safety
/// `dest` must be valid for writes of `len` bytes (getrandom's contract).
#[unsafe(no_mangle)]
unsafe extern "Rust" fn __getrandom_v03_custom(
    dest: *mut u8,
    len: usize,
) -> Result<(), getrandom::Error> {
    // SAFETY: getrandom passes a buffer valid for `len` bytes.
    let buf = unsafe { core::slice::from_raw_parts_mut(dest, len) };
    if fill(buf) {
        Ok(())
    } else {
        Err(getrandom::Error::UNSUPPORTED)
    }
}
