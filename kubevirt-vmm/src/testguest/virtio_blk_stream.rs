//! A streaming virtio-blk guest for benchmarks: `rounds` sequential requests of
//! [`STREAM_IO_LEN`] bytes, writes then a flush then reads, one request in flight, notified
//! through the queue's ioeventfd, completion polled on the used ring. It skips discovery
//! (the disk is the only device, in slot 1, with the transport's fixed BAR 0 layout) so only
//! I/O is timed; [`super::virtio_blk`] is the driver that discovers.
//!
//! The data buffer is written once before the first mark, so guest memory is populated as a
//! running guest's is. Phases are marked with a 4-byte `out` to [`super::REPORT_PORT`]:
//! EAX = 1 before the writes, 2 after them (and the flush), 3 after the reads. Requests whose status is not 0
//! are counted at [`STREAM_ERRORS`]. Needs [`STREAM_MEMORY_SIZE`] of guest RAM.

use iced_x86::code_asm::{
    CodeAssembler, ax, byte_ptr, dword_ptr, dx, eax, ecx, edx, ptr, qword_ptr, r9, r10, r10d, r11d,
    r12d, r12w, r13d, r14, rax, rbp, rbx, rdi, rdx, word_ptr,
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
        touch_buffer(a)?;
        device_setup(a)?;
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

/// Most requests [`virtio_blk_stream_queued`] keeps in flight.
pub const MAX_QUEUE_DEPTH: u32 = 4;

/// Like [`virtio_blk_stream`] (same phases, marks and error count), but keeps up to `depth`
/// requests in flight (1, 2 or 4): whenever one completes the next is submitted and the queue
/// notified, as a guest kernel's readahead and writeback keep a disk busy. All requests use
/// the same 1 MiB buffer (the data is not checked, only the statuses).
pub fn virtio_blk_stream_queued(rounds: u32, depth: u32) -> Result<TestGuest, TestGuestError> {
    let depth = match depth {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => MAX_QUEUE_DEPTH,
    };
    let rounds = rounds.max(1);
    let mut g = GuestAsm::new("virtio_blk_stream_queued")?;
    let r = (|| {
        let a = g.a();
        touch_buffer(a)?;
        device_setup(a)?;
        // Slot i: descriptors 3i header (QBASE + 0x3000 + 16 i) -> 3i+1 data -> 3i+2 status
        // (STATUS + i). The flush: 12 header (QBASE + 0x3100) -> 13 status (STATUS + 8).
        for i in 0..depth as i32 {
            let d = 48 * i;
            a.lea(rax, ptr(rbp + (0x3000 + 16 * i)))?;
            a.mov(qword_ptr(rbp + d), rax)?;
            a.mov(dword_ptr(rbp + (d + 8)), 16u32)?;
            a.mov(word_ptr(rbp + (d + 12)), 1u32)?;
            a.mov(word_ptr(rbp + (d + 14)), (3 * i + 1) as u32)?;
            a.mov(rax, BUF)?;
            a.mov(qword_ptr(rbp + (d + 16)), rax)?;
            a.mov(dword_ptr(rbp + (d + 24)), STREAM_IO_LEN)?;
            a.mov(word_ptr(rbp + (d + 30)), (3 * i + 2) as u32)?;
            a.lea(rax, ptr(rbx + i))?;
            a.mov(qword_ptr(rbp + (d + 32)), rax)?;
            a.mov(dword_ptr(rbp + (d + 40)), 1u32)?;
            a.mov(word_ptr(rbp + (d + 44)), 2u32)?;
        }
        a.lea(rax, ptr(rbp + 0x3100))?;
        a.mov(qword_ptr(rbp + 192), rax)?;
        a.mov(dword_ptr(rbp + 200), 16u32)?;
        a.mov(word_ptr(rbp + 204), 1u32)?;
        a.mov(word_ptr(rbp + 206), 13u32)?;
        a.lea(rax, ptr(rbx + 8))?;
        a.mov(qword_ptr(rbp + 208), rax)?;
        a.mov(dword_ptr(rbp + 216), 1u32)?;
        a.mov(word_ptr(rbp + 220), 2u32)?;
        a.mov(dword_ptr(rbp + 0x3100), T_FLUSH)?;
        a.xor(r12d, r12d)?;
        a.mov(eax, 1u32)
    })();
    g.check(r)?;
    g.report_eax()?;

    for (kind, data_flags, mark) in [(T_OUT, 1u32, 2u32), (T_IN, 3, 3)] {
        let r = (|| {
            let a = g.a();
            for i in 0..depth as i32 {
                a.mov(dword_ptr(rbp + (0x3000 + 16 * i)), kind)?;
                a.mov(word_ptr(rbp + (48 * i + 28)), data_flags)?;
            }
            // ECX = submitted, R13D = completed (this phase), R11D = avail index at start.
            a.xor(ecx, ecx)?;
            a.xor(r13d, r13d)?;
            a.mov(r11d, r12d)?;
            let mut fill = a.create_label();
            let mut filled = a.create_label();
            let mut wait = a.create_label();
            let mut reap = a.create_label();
            let mut ok = a.create_label();
            let mut done = a.create_label();
            a.set_label(&mut fill)?;
            a.cmp(ecx, rounds)?;
            a.jae(filled)?;
            a.mov(eax, ecx)?;
            a.sub(eax, r13d)?;
            a.cmp(eax, depth)?;
            a.jae(filled)?;
            // Slot = ECX % depth: reset its status, set its sector, put head 3 * slot on the
            // avail ring.
            a.mov(eax, ecx)?;
            a.and(eax, (depth - 1) as i32)?;
            a.mov(byte_ptr(rbx + rax), 0xffu32)?;
            a.mov(edx, eax)?;
            a.shl(edx, 4)?;
            a.mov(r10d, ecx)?;
            a.shl(r10, STREAM_IO_LEN.trailing_zeros() - 9)?;
            a.mov(qword_ptr(rbp + rdx + 0x3008), r10)?;
            a.lea(eax, ptr(rax + rax * 2))?;
            a.mov(edx, r12d)?;
            a.and(edx, 15)?;
            a.mov(word_ptr(rbp + rdx * 2 + 0x1004), ax)?;
            a.inc(r12d)?;
            a.inc(ecx)?;
            a.jmp(fill)?;
            a.set_label(&mut filled)?;
            a.mov(word_ptr(rbp + 0x1002), r12w)?;
            a.mfence()?;
            a.mov(word_ptr(r9), 0u32)?;
            // Wait for at least one completion past R13D.
            a.set_label(&mut wait)?;
            a.pause()?;
            a.movzx(eax, word_ptr(rbp + 0x2002))?;
            a.sub(eax, r11d)?;
            a.and(eax, 0xffff)?;
            a.cmp(eax, r13d)?;
            a.je(wait)?;
            // Reap completions in order: status of slot R13D % depth.
            a.set_label(&mut reap)?;
            a.mov(edx, r13d)?;
            a.and(edx, (depth - 1) as i32)?;
            a.cmp(byte_ptr(rbx + rdx), 0)?;
            a.je(ok)?;
            a.inc(dword_ptr(
                rbx + (STREAM_ERRORS as i64 - STATUS as i64) as i32,
            ))?;
            a.set_label(&mut ok)?;
            a.inc(r13d)?;
            a.cmp(r13d, eax)?;
            a.jb(reap)?;
            a.cmp(r13d, rounds)?;
            a.jb(fill)?;
            a.set_label(&mut done)?;
            Ok::<_, iced_x86::IcedError>(())
        })();
        g.check(r)?;
        if kind == T_OUT {
            let r = (|| {
                let a = g.a();
                a.mov(byte_ptr(rbx + 8), 0xffu32)?;
                a.mov(edx, r12d)?;
                a.and(edx, 15)?;
                a.mov(word_ptr(rbp + rdx * 2 + 0x1004), 12u32)?;
                a.inc(r12d)?;
                a.mov(word_ptr(rbp + 0x1002), r12w)?;
                a.mfence()?;
                a.mov(word_ptr(r9), 0u32)?;
                let mut poll = a.create_label();
                a.set_label(&mut poll)?;
                a.pause()?;
                a.movzx(eax, word_ptr(rbp + 0x2002))?;
                a.cmp(ax, r12w)?;
                a.jne(poll)?;
                let mut ok = a.create_label();
                a.cmp(byte_ptr(rbx + 8), 0)?;
                a.je(ok)?;
                a.inc(dword_ptr(
                    rbx + (STREAM_ERRORS as i64 - STATUS as i64) as i32,
                ))?;
                a.set_label(&mut ok)
            })();
            g.check(r)?;
        }
        let r = g.a().mov(eax, mark);
        g.check(r)?;
        g.report_eax()?;
    }
    g.exit(0)?;
    g.finish()
}

/// Writes the whole data buffer once, before anything is timed: a guest's memory is its own
/// before it does I/O into it (the host side's buffer is written before its timing starts
/// too). Untouched, the first request that fills it pays the host's first-touch faults,
/// which on KVM-on-PVM cost about 13 us per 4 KiB page (3.4 ms for 1 MiB). Clobbers RAX,
/// RCX, RDI.
fn touch_buffer(a: &mut CodeAssembler) -> Result<(), iced_x86::IcedError> {
    a.mov(rdi, BUF)?;
    a.mov(ecx, STREAM_IO_LEN / 8)?;
    a.mov(rax, 0x5a5a_5a5a_5a5a_5a5au64)?;
    a.rep().stosq()
}

/// Common set-up: RBX = the status bytes, R14 = BAR 0 of slot 1 (64-bit), the device reset
/// and negotiated (VERSION_1 only), queue 0 with 16 entries at RBP = QBASE, R9 = its notify
/// address.
fn device_setup(a: &mut CodeAssembler) -> Result<(), iced_x86::IcedError> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_guest_assembles_and_fits_its_memory() {
        let g = virtio_blk_stream(8).unwrap();
        assert!(!g.code.is_empty());
        for depth in [1, 2, 4] {
            assert!(!virtio_blk_stream_queued(8, depth).unwrap().code.is_empty());
        }
        assert!(BUF + u64::from(STREAM_IO_LEN) <= STREAM_MEMORY_SIZE);
    }
}
