//! A streaming virtio-blk guest for benchmarks: `rounds` sequential requests of
//! [`STREAM_IO_LEN`] bytes, writes then a flush then reads, up to `depth` requests in flight
//! (whenever one completes the next is submitted and the queue notified, as a guest kernel's
//! readahead and writeback keep a disk busy), completions polled on the used ring, no
//! interrupts. All requests use the same 1 MiB buffer; the data is not checked, only the
//! statuses ([`super::virtio_blk`] is the driver that checks data).
//!
//! It finds the first modern virtio-blk on bus 0 the portable way ([`super::virtio_pci`]), so
//! the same guest runs on kubevirt-vmm and on QEMU (`benches/vmm_blk_qemu.rs` boots it as a PVH
//! ELF on both). It negotiates VERSION_1 and, if offered, FLUSH: QEMU turns a disk whose driver
//! does not negotiate FLUSH into write-through (an fdatasync after every write).
//!
//! The data buffer is written once before the first mark, so guest memory is populated as a
//! running guest's is. Phases are marked ([`Marks`]) with 1 before the writes, 2 after them
//! (and the flush), 3 after the reads. Requests whose status is not 0 are counted at
//! [`STREAM_ERRORS`]; the guest exits with 0, or with a code [`exit_meaning`] explains. Needs
//! [`STREAM_MEMORY_SIZE`] of guest RAM.

use iced_x86::IcedError;
use iced_x86::code_asm::{
    CodeAssembler, al, ax, byte_ptr, dword_ptr, dx, eax, ecx, edx, ptr, qword_ptr, r8, r9, r10,
    r10d, r11d, r12d, r12w, r13d, rax, rbp, rbx, rcx, rdi, rdx, rsi, word_ptr,
};

use super::virtio_pci::{self, PciRoutines, VIRTIO_BLK_PCI_ID};
use super::{
    DEBUG_EXIT_PORT, GUEST_DATA_ADDR, GuestAsm, REPORT_PORT, SERIAL_PORT, TestGuest, TestGuestError,
};

/// Bytes per request.
pub const STREAM_IO_LEN: u32 = 1 << 20;
/// Guest RAM the stream guest needs.
pub const STREAM_MEMORY_SIZE: u64 = 8 << 20;
/// Number of requests that did not complete with status 0 (u32).
pub const STREAM_ERRORS: u64 = GUEST_DATA_ADDR + 0x10;
/// Most requests the guest keeps in flight.
pub const MAX_QUEUE_DEPTH: u32 = 4;

/// Exit code: at least one request completed with a non-zero status.
pub const EXIT_REQUEST_FAILED: u8 = 2;
/// Exit code: no modern virtio-blk function on bus 0.
pub const EXIT_NO_DEVICE: u8 = 3;
/// Exit code: the function lacks the common or the notify capability.
pub const EXIT_NO_CAPS: u8 = 4;
/// Exit code: the device refused `FEATURES_OK`.
pub const EXIT_FEATURES_REFUSED: u8 = 5;
/// Exit code: a virtio region lies above 4 GiB, which the guest does not map.
pub const EXIT_ABOVE_4G: u8 = 6;

/// What a stream guest's exit code means.
pub fn exit_meaning(code: u8) -> &'static str {
    match code {
        0 => "ok",
        EXIT_REQUEST_FAILED => "a request completed with a non-zero status",
        EXIT_NO_DEVICE => "no modern virtio-blk (1af4:1042) on bus 0",
        EXIT_NO_CAPS => "no common or notify capability",
        EXIT_FEATURES_REFUSED => "the device refused FEATURES_OK",
        EXIT_ABOVE_4G => "a virtio region is above 4 GiB (the guest maps only the low 4 GiB)",
        _ => "unknown",
    }
}

/// How the guest marks the phases 1, 2 and 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marks {
    /// A 4-byte `out` of the phase number to [`REPORT_PORT`] (a device of the test's own).
    ReportPort,
    /// The digit `'1'`, `'2'` or `'3'` on COM1, for VMMs that only offer a serial port.
    Serial,
}

const QBASE: u64 = 0x30_0000;
const BUF: u64 = 0x40_0000;
const STATUS: u64 = GUEST_DATA_ADDR + 0x20;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const F_FLUSH: u32 = 1 << 9;
/// Descriptor of the flush request's header (its status follows at +1).
const FLUSH_HEAD: u32 = 3 * MAX_QUEUE_DEPTH;
const _: () = assert!(STATUS + 9 <= GUEST_DATA_ADDR + 0x1000);
const _: () = assert!((FLUSH_HEAD as u64 + 2) * 16 <= 0x1000);

/// The guest: `rounds` x 1 MiB written from sector 0 on with `depth` (1, 2 or 4; others are
/// rounded down to one of these) requests in flight, a flush, the same read back, exit 0.
pub fn virtio_blk_stream(
    rounds: u32,
    depth: u32,
    marks: Marks,
) -> Result<TestGuest, TestGuestError> {
    let depth = match depth {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => MAX_QUEUE_DEPTH,
    };
    let mut g = GuestAsm::new("virtio_blk_stream")?;
    let r = program(g.a(), rounds.max(1), depth, marks);
    g.check(r)?;
    g.finish()
}

fn program(a: &mut CodeAssembler, rounds: u32, depth: u32, marks: Marks) -> Result<(), IcedError> {
    let routines = PciRoutines::new(a);
    let mut fail = a.create_label();
    let mut no_device = a.create_label();

    touch_buffer(a)?;
    virtio_pci::find_function(a, &routines, VIRTIO_BLK_PCI_ID, no_device)?;
    a.call(routines.regions)?;
    a.mov(al, u32::from(EXIT_NO_CAPS))?;
    for r in [r8, r9] {
        a.test(r, r)?;
        a.jz(fail)?;
    }
    a.mov(al, u32::from(EXIT_ABOVE_4G))?;
    a.mov(rcx, r8)?;
    a.or(rcx, r9)?;
    a.shr(rcx, 32)?;
    a.jnz(fail)?;
    // Another VMM's firmware ran before us: the queue memory and the counter start dirty.
    virtio_pci::zero(a, QBASE, 0x4000)?;
    a.mov(dword_ptr(STREAM_ERRORS), eax)?;

    a.mov(rsi, r8)?;
    virtio_pci::reset(a)?;
    virtio_pci::device_features(a, 0)?;
    a.and(eax, F_FLUSH)?;
    virtio_pci::accept_features(a)?;
    let mut features_ok = a.create_label();
    a.test(al, 8)?;
    a.jnz(features_ok)?;
    a.mov(al, u32::from(EXIT_FEATURES_REFUSED))?;
    a.jmp(fail)?;
    a.set_label(&mut features_ok)?;
    a.mov(rbp, QBASE)?;
    virtio_pci::setup_queue(a, 0, 16, rbp, 0, r9)?;
    virtio_pci::driver_ok(a)?;

    descriptors(a, depth)?;
    a.xor(r12d, r12d)?;
    mark(a, marks, 1)?;
    for (kind, data_flags, phase) in [(T_OUT, 1u32, 2u32), (T_IN, 3, 3)] {
        stream(a, rounds, depth, kind, data_flags)?;
        if kind == T_OUT {
            flush(a)?;
        }
        mark(a, marks, phase)?;
    }
    a.mov(al, u32::from(EXIT_REQUEST_FAILED))?;
    a.cmp(dword_ptr(STREAM_ERRORS), 0)?;
    a.jne(fail)?;
    a.xor(eax, eax)?;
    a.jmp(fail)?;

    a.set_label(&mut no_device)?;
    a.mov(al, u32::from(EXIT_NO_DEVICE))?;
    // fail: exit with AL (0 included).
    a.set_label(&mut fail)?;
    a.mov(dx, u32::from(DEBUG_EXIT_PORT))?;
    a.out(dx, al)?;
    let mut spin = a.create_label();
    a.set_label(&mut spin)?;
    a.pause()?;
    a.jmp(spin)?;
    routines.emit(a)
}

/// RBX = the status bytes. Slot i: descriptors 3i header (QBASE + 0x3000 + 16 i) -> 3i+1
/// data (BUF) -> 3i+2 status (STATUS + i). The flush: [`FLUSH_HEAD`] header (QBASE + 0x3100)
/// -> status (STATUS + 8).
fn descriptors(a: &mut CodeAssembler, depth: u32) -> Result<(), IcedError> {
    a.mov(rbx, STATUS)?;
    let desc = |a: &mut CodeAssembler, i: u32, len: u32, flags: u32| {
        let d = 16 * i as i32;
        a.mov(qword_ptr(rbp + d), rax)?;
        a.mov(dword_ptr(rbp + (d + 8)), len)?;
        a.mov(word_ptr(rbp + (d + 12)), flags)?;
        a.mov(word_ptr(rbp + (d + 14)), i + 1)
    };
    for i in 0..depth {
        a.lea(rax, ptr(rbp + (0x3000 + 16 * i as i32)))?;
        desc(a, 3 * i, 16, 1)?;
        a.mov(rax, BUF)?;
        desc(a, 3 * i + 1, STREAM_IO_LEN, 1)?;
        a.lea(rax, ptr(rbx + i as i32))?;
        desc(a, 3 * i + 2, 1, 2)?;
    }
    a.lea(rax, ptr(rbp + 0x3100))?;
    desc(a, FLUSH_HEAD, 16, 1)?;
    a.lea(rax, ptr(rbx + 8))?;
    desc(a, FLUSH_HEAD + 1, 1, 2)?;
    a.mov(dword_ptr(rbp + 0x3100), T_FLUSH)
}

/// One phase: `rounds` requests of `kind`, keeping up to `depth` in flight.
fn stream(
    a: &mut CodeAssembler,
    rounds: u32,
    depth: u32,
    kind: u32,
    data_flags: u32,
) -> Result<(), IcedError> {
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
    a.set_label(&mut fill)?;
    a.cmp(ecx, rounds)?;
    a.jae(filled)?;
    a.mov(eax, ecx)?;
    a.sub(eax, r13d)?;
    a.cmp(eax, depth)?;
    a.jae(filled)?;
    // Slot = ECX % depth: reset its status, set its sector, put head 3 * slot on the ring.
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
    // Reap completions in order: the status of slot R13D % depth.
    a.set_label(&mut reap)?;
    a.mov(edx, r13d)?;
    a.and(edx, (depth - 1) as i32)?;
    a.cmp(byte_ptr(rbx + rdx), 0)?;
    a.je(ok)?;
    a.inc(dword_ptr(STREAM_ERRORS))?;
    a.set_label(&mut ok)?;
    a.inc(r13d)?;
    a.cmp(r13d, eax)?;
    a.jb(reap)?;
    a.cmp(r13d, rounds)?;
    a.jb(fill)
}

/// Submits the flush, notifies and polls for it; counts a bad status.
fn flush(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(byte_ptr(rbx + 8), 0xffu32)?;
    a.mov(edx, r12d)?;
    a.and(edx, 15)?;
    a.mov(word_ptr(rbp + rdx * 2 + 0x1004), FLUSH_HEAD)?;
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
    a.inc(dword_ptr(STREAM_ERRORS))?;
    a.set_label(&mut ok)
}

/// Marks phase `n`. Clobbers RAX, RDX.
fn mark(a: &mut CodeAssembler, marks: Marks, n: u32) -> Result<(), IcedError> {
    match marks {
        Marks::ReportPort => {
            a.mov(eax, n)?;
            a.mov(dx, u32::from(REPORT_PORT))?;
            a.out(dx, eax)
        }
        Marks::Serial => {
            a.mov(al, u32::from(b'0') + n)?;
            a.mov(dx, u32::from(SERIAL_PORT))?;
            a.out(dx, al)
        }
    }
}

/// Writes the whole data buffer once, before anything is timed: a guest's memory is its own
/// before it does I/O into it (the host side's buffer is written before its timing starts
/// too). Untouched, the first request that fills it pays the host's first-touch faults,
/// which on KVM-on-PVM cost about 13 us per 4 KiB page (3.4 ms for 1 MiB). Clobbers RAX,
/// RCX, RDI.
fn touch_buffer(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rdi, BUF)?;
    a.mov(ecx, STREAM_IO_LEN / 8)?;
    a.mov(rax, 0x5a5a_5a5a_5a5a_5a5au64)?;
    a.rep().stosq()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_guest_assembles_and_fits_its_memory() {
        for depth in [1, 2, 4] {
            for marks in [Marks::ReportPort, Marks::Serial] {
                assert!(!virtio_blk_stream(8, depth, marks).unwrap().code.is_empty());
            }
        }
        assert!(BUF + u64::from(STREAM_IO_LEN) <= STREAM_MEMORY_SIZE);
    }
}
