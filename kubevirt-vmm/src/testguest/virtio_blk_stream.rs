//! A streaming virtio-blk guest for benchmarks: `rounds` sequential requests of
//! [`STREAM_IO_LEN`] bytes, writes then a flush then reads, one request in flight, notified
//! through the queue's ioeventfd, completion polled on the used ring. It skips discovery
//! (the disk is the only device, in slot 1, with the transport's fixed BAR 0 layout) so only
//! I/O is timed; [`super::virtio_blk`] is the driver that discovers.
//!
//! Phases are marked with a 4-byte `out` to [`super::REPORT_PORT`]: EAX = 1 before the
//! writes, 2 after them (and the flush), 3 after the reads. Requests whose status is not 0
//! are counted at [`STREAM_ERRORS`]. Needs [`STREAM_MEMORY_SIZE`] of guest RAM.

use iced_x86::code_asm::{
    byte_ptr, dword_ptr, dx, eax, ecx, edx, ptr, qword_ptr, r9, r12d, r12w, r14, rax, rbp, rbx,
    word_ptr,
};

use super::{GUEST_DATA_ADDR, GuestAsm, TestGuest, TestGuestError};
use crate::virtio::pci::NOTIFY_OFFSET;

/// Bytes per request.
pub const STREAM_IO_LEN: u32 = 1 << 20;
/// Guest RAM the stream guest needs.
pub const STREAM_MEMORY_SIZE: u64 = 8 << 20;
/// Number of requests that did not complete with status 0 (u32).
pub const STREAM_ERRORS: u64 = GUEST_DATA_ADDR + 0x10;
const QBASE: u64 = 0x30_0000;
const BUF: u64 = 0x40_0000;
const STATUS: u64 = GUEST_DATA_ADDR + 0x20;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;

/// The guest: writes `rounds` x 1 MiB from sector 0 on, flushes, reads them back, exits 0.
pub fn virtio_blk_stream(rounds: u32) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("virtio_blk_stream")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, STATUS)?;
        // BAR 0 of slot 1 (64-bit).
        for (reg, shift) in [(0x10u32, 0u32), (0x14, 32)] {
            a.mov(eax, 0x8000_0800u32 | reg)?;
            a.mov(dx, 0xcf8u32)?;
            a.out(dx, eax)?;
            a.mov(dx, 0xcfcu32)?;
            a.in_(eax, dx)?;
            if shift == 0 {
                a.and(eax, 0xffff_fff0u32 as i32)?;
                a.mov(r14, rax)?;
            } else {
                a.shl(rax, 32)?;
                a.or(r14, rax)?;
            }
        }
        // Reset, negotiate VERSION_1 only, queue 0 with 16 entries at QBASE.
        for s in [0u32, 1, 3] {
            a.mov(byte_ptr(r14 + 0x14), s)?;
        }
        a.mov(dword_ptr(r14 + 0x08), 0u32)?;
        a.mov(dword_ptr(r14 + 0x0c), 0u32)?;
        a.mov(dword_ptr(r14 + 0x08), 1u32)?;
        a.mov(dword_ptr(r14 + 0x0c), 1u32)?;
        a.mov(byte_ptr(r14 + 0x14), 0x0bu32)?;
        a.mov(rbp, QBASE)?;
        a.mov(word_ptr(r14 + 0x16), 0u32)?;
        a.mov(word_ptr(r14 + 0x18), 16u32)?;
        a.mov(qword_ptr(r14 + 0x20), rbp)?;
        a.lea(rax, ptr(rbp + 0x1000))?;
        a.mov(qword_ptr(r14 + 0x28), rax)?;
        a.lea(rax, ptr(rbp + 0x2000))?;
        a.mov(qword_ptr(r14 + 0x30), rax)?;
        a.mov(word_ptr(r14 + 0x1c), 1u32)?;
        a.mov(byte_ptr(r14 + 0x14), 0x0fu32)?;
        a.lea(r9, ptr(r14 + NOTIFY_OFFSET as i32))?;
        // Descriptors 0 header (QBASE + 0x3000) -> 1 data (BUF) -> 2 status; a flush uses
        // 3 header -> 2 status.
        a.lea(rax, ptr(rbp + 0x3000))?;
        a.mov(qword_ptr(rbp), rax)?;
        a.mov(dword_ptr(rbp + 8), 16u32)?;
        a.mov(word_ptr(rbp + 12), 1u32)?;
        a.mov(word_ptr(rbp + 14), 1u32)?;
        a.mov(rax, BUF)?;
        a.mov(qword_ptr(rbp + 16), rax)?;
        a.mov(dword_ptr(rbp + 24), STREAM_IO_LEN)?;
        a.mov(word_ptr(rbp + 30), 2u32)?;
        a.mov(qword_ptr(rbp + 32), rbx)?;
        a.mov(dword_ptr(rbp + 40), 1u32)?;
        a.mov(word_ptr(rbp + 44), 2u32)?;
        a.lea(rax, ptr(rbp + 0x3010))?;
        a.mov(qword_ptr(rbp + 48), rax)?;
        a.mov(dword_ptr(rbp + 56), 16u32)?;
        a.mov(word_ptr(rbp + 60), 1u32)?;
        a.mov(word_ptr(rbp + 62), 2u32)?;
        a.mov(dword_ptr(rbp + 0x3010), T_FLUSH)?;
        a.xor(r12d, r12d)?;
        a.mov(eax, 1u32)
    })();
    g.check(r)?;
    g.report_eax()?;

    // Submits the chain at descriptor `head`, notifies, polls; counts a bad status.
    let submit = |g: &mut GuestAsm, head: u32| {
        let r = (|| {
            let a = g.a();
            a.mov(byte_ptr(rbx), 0xffu32)?;
            a.mov(eax, r12d)?;
            a.and(eax, 15)?;
            a.mov(word_ptr(rbp + rax * 2 + 0x1004), head)?;
            a.inc(r12d)?;
            a.mov(word_ptr(rbp + 0x1002), r12w)?;
            a.mfence()?;
            a.mov(word_ptr(r9), 0u32)?;
            let mut poll = a.create_label();
            a.set_label(&mut poll)?;
            a.pause()?;
            a.movzx(eax, word_ptr(rbp + 0x2002))?;
            a.movzx(edx, r12w)?;
            a.cmp(eax, edx)?;
            a.jne(poll)?;
            let mut ok = a.create_label();
            a.cmp(byte_ptr(rbx), 0)?;
            a.je(ok)?;
            a.inc(dword_ptr(
                rbx + (STREAM_ERRORS as i64 - STATUS as i64) as i32,
            ))?;
            a.set_label(&mut ok)
        })();
        g.check(r)
    };

    for (kind, data_flags, mark) in [(T_OUT, 1u32, 2u32), (T_IN, 3, 3)] {
        let r = (|| {
            let a = g.a();
            a.mov(dword_ptr(rbp + 0x3000), kind)?;
            a.mov(word_ptr(rbp + 28), data_flags)?;
            a.xor(ecx, ecx)?;
            Ok::<_, iced_x86::IcedError>(())
        })();
        g.check(r)?;
        let mut top = g.a().create_label();
        let r = g.a().set_label(&mut top);
        g.check(r)?;
        let r = (|| {
            let a = g.a();
            a.mov(eax, ecx)?;
            a.shl(rax, STREAM_IO_LEN.trailing_zeros() - 9)?;
            a.mov(qword_ptr(rbp + 0x3008), rax)
        })();
        g.check(r)?;
        submit(&mut g, 0)?;
        let r = (|| {
            let a = g.a();
            a.inc(ecx)?;
            a.cmp(ecx, rounds.max(1))?;
            a.jb(top)
        })();
        g.check(r)?;
        if kind == T_OUT {
            submit(&mut g, 3)?;
        }
        let r = g.a().mov(eax, mark);
        g.check(r)?;
        g.report_eax()?;
    }
    g.exit(0)?;
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_guest_assembles_and_fits_its_memory() {
        let g = virtio_blk_stream(8).unwrap();
        assert!(!g.code.is_empty());
        assert!(BUF + u64::from(STREAM_IO_LEN) <= STREAM_MEMORY_SIZE);
    }
}
