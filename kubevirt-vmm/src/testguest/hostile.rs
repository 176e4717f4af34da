//! A hostile guest: from a seeded xorshift64 generator, it reads and writes random values of
//! random sizes at random offsets of the device registers the host lists (port I/O and MMIO),
//! and scribbles random bytes over a scratch area, so that the addresses it writes into
//! device registers (virtqueue rings, fw_cfg DMA structures, buffer addresses) point at
//! garbage: descriptor loops, chains longer than the queue, out-of-range addresses, zero
//! lengths, indirect tables pointing anywhere. The VMM must survive it.
//!
//! The host writes the parameters at [`PARAMS`] before starting the VM. Every
//! [`REPORT_EVERY`] operations the guest reports how many it has done on
//! [`super::REPORT_PORT`] (the watchdog's heartbeat), then exits 0 through the debug-exit port
//! when it has done them all.
//!
//! Values written are biased so that devices actually get somewhere: a quarter are small
//! (0-7: status bits, queue enables, selectors), a quarter point into the scratch area, a
//! quarter just past the end of RAM, a quarter anything.
//!
//! fw_cfg gets more than random port accesses: the guest first reads the signature through
//! the selector and data ports and again by DMA, and reports both on the report port (offsets
//! [`REPORT_FW_CFG_PORT`] and [`REPORT_FW_CFG_DMA`]: "QEMU" when the device is there); then
//! every [`FW_CFG_EVERY`] operations it builds a random DMA descriptor in the scratch area
//! (any key, any control bits, lengths up to 8 KiB or anything, targets in the scratch area,
//! past the end of RAM or anywhere) and hands its address to the DMA register, or (one time in
//! four) an address past RAM or anywhere. At the end it reports how many of those descriptors
//! the device answered ([`REPORT_FW_CFG_ANSWERED`]).

use super::{GUEST_DATA_ADDR, GuestAsm, TestGuest, TestGuestError};
use crate::devices::fw_cfg::{FW_CFG_DATA_PORT, FW_CFG_DMA_PORT, FW_CFG_SELECTOR_PORT};
use iced_x86::IcedError;
use iced_x86::code_asm::{
    CodeAssembler, al, ax, byte_ptr, cl, di, dword_ptr, dx, eax, ebx, ecx, edi, edx, qword_ptr, r8,
    r8d, r9, r10, r11, r12, r13, r13d, r14, r15, rax, rbp, rbx, rcx, rdi, rdx, rsi, word_ptr,
};

/// fw_cfg DMA control bits (QEMU's `docs/specs/fw_cfg.rst`).
const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SELECT: u32 = 1 << 3;

/// Where the host writes the parameters: seed, operations, target count, scratch base,
/// scratch mask (size - 1, a power of two minus one), RAM end, then the targets.
pub const PARAMS: u64 = GUEST_DATA_ADDR + 0x400;
/// The first target: `(base: u64, len: u64)` pairs; bit 63 of `len` set for MMIO.
pub const TARGETS: u64 = PARAMS + 0x40;
/// At most this many targets.
pub const MAX_TARGETS: usize = 128;
/// The virtio functions' BAR 0 addresses (u64 each), for the driver-like set-up.
pub const VIRTIO_BARS: u64 = TARGETS + 16 * MAX_TARGETS as u64;
/// At most this many virtio functions.
pub const MAX_VIRTIO: usize = 16;
/// Every this many operations (half-way between heartbeats' multiples), the guest sets up one
/// random virtio function the way a driver would (reset, features with VERSION_1 and a random
/// subset of the device's, up to four queues of a random power-of-two size whose rings sit at
/// random pages of the scratch area, DRIVER_OK) and notifies its queues: the devices then
/// process the garbage in the scratch area as descriptors.
pub const SETUP_EVERY: u64 = 2048;
/// Operations between two heartbeats.
pub const REPORT_EVERY: u64 = 256;
/// Every this many operations (a quarter of the way between multiples), a random fw_cfg DMA.
pub const FW_CFG_EVERY: u64 = 64;
/// Report-port offset of the fw_cfg signature read through the data port (a 4-byte `out`).
pub const REPORT_FW_CFG_PORT: u16 = 4;
/// Report-port offset of the fw_cfg signature read by DMA (all ones if the DMA failed).
pub const REPORT_FW_CFG_DMA: u16 = 8;
/// Report-port offset of the number of random fw_cfg DMA descriptors the device answered
/// (wrote back a status), sent once before the last heartbeat.
pub const REPORT_FW_CFG_ANSWERED: u16 = 12;
/// Bytes of the report port the guest uses.
pub const REPORT_SPAN: u16 = 16;
/// The guest's count of answered fw_cfg descriptors (a u64 in its data page).
const FW_CFG_ANSWERED: u64 = GUEST_DATA_ADDR + 0x3f8;
/// `len` flag: the target is MMIO, not port I/O.
pub const MMIO: u64 = 1 << 63;

/// A device register range to hammer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// First port or guest-physical address.
    pub base: u64,
    /// Length in bytes (at least 1).
    pub len: u64,
    /// MMIO (true) or port I/O.
    pub mmio: bool,
}

/// The parameters as the guest reads them, in guest byte order.
pub fn params(
    seed: u64,
    ops: u64,
    targets: &[Target],
    virtio_bars: &[u64],
    scratch: (u64, u64),
    ram_end: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [
        seed | 1,
        ops.max(1),
        targets.len().clamp(1, MAX_TARGETS) as u64,
        scratch.0,
        scratch.1.next_power_of_two() - 1,
        ram_end,
        virtio_bars.len().min(MAX_VIRTIO) as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.resize((TARGETS - PARAMS) as usize, 0);
    for t in targets.iter().take(MAX_TARGETS) {
        out.extend_from_slice(&t.base.to_le_bytes());
        out.extend_from_slice(&(t.len.max(1) | if t.mmio { MMIO } else { 0 }).to_le_bytes());
    }
    out.resize((VIRTIO_BARS - PARAMS) as usize, 0);
    for bar in virtio_bars.iter().take(MAX_VIRTIO) {
        out.extend_from_slice(&bar.to_le_bytes());
    }
    out
}

/// The hostile guest.
pub fn hostile() -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("hostile")?;
    let r = hammer(g.a(), Beat::ReportPort);
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

/// Where the guest's heartbeat goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Beat {
    /// The operations done so far, on [`super::REPORT_PORT`].
    ReportPort,
    /// A `.` on COM1 (the test must then leave COM1 out of the targets).
    Serial,
}

/// One heartbeat (see [`Beat`]); the count is r13d. Uses rax and rdx.
fn heartbeat(a: &mut CodeAssembler, beat: Beat) -> Result<(), IcedError> {
    match beat {
        Beat::ReportPort => {
            a.mov(eax, r13d)?;
            a.mov(dx, u32::from(super::REPORT_PORT))?;
            a.out(dx, eax)
        }
        Beat::Serial => {
            a.mov(dx, u32::from(super::SERIAL_PORT))?;
            a.mov(al, u32::from(b'.'))?;
            a.out(dx, al)
        }
    }
}

/// The hostile loop over the parameters at [`PARAMS`], heartbeats to `beat`; falls through
/// once every operation is done.
pub(super) fn hammer(a: &mut CodeAssembler, beat: Beat) -> Result<(), IcedError> {
    // r15: generator state, r14: operations left, r13: done, r12: targets, r11: count,
    // r10: scratch base, r9: scratch mask.
    a.mov(rsi, PARAMS)?;
    a.mov(r15, qword_ptr(rsi))?;
    a.mov(r14, qword_ptr(rsi + 8))?;
    a.xor(r13, r13)?;
    a.mov(r11, qword_ptr(rsi + 16))?;
    a.mov(r10, qword_ptr(rsi + 24))?;
    a.mov(r9, qword_ptr(rsi + 32))?;
    a.mov(r12, TARGETS)?;
    fw_cfg_signatures(a)?;
    let mut top = a.create_label();
    let mut no_report = a.create_label();
    let mut scribble = a.create_label();
    a.set_label(&mut top)?;
    a.test(r13, (REPORT_EVERY - 1) as i32)?;
    a.jnz(no_report)?;
    // Heartbeat, then 16 random qwords over the scratch area.
    heartbeat(a, beat)?;
    a.mov(ebx, 16u32)?;
    a.set_label(&mut scribble)?;
    next(a)?;
    a.mov(rcx, rax)?;
    a.and(rcx, r9)?;
    a.and(rcx, -8i32)?;
    next(a)?;
    a.mov(qword_ptr(r10 + rcx), rax)?;
    a.dec(ebx)?;
    a.jnz(scribble)?;
    a.set_label(&mut no_report)?;
    driver_setup(a)?;
    fw_cfg_dma(a)?;
    // The target: rbx = base, rcx = len, r8 = 1 for MMIO.
    next(a)?;
    a.xor(rdx, rdx)?;
    a.div(r11)?;
    a.shl(rdx, 4)?;
    a.mov(rbx, qword_ptr(r12 + rdx))?;
    a.mov(rcx, qword_ptr(r12 + rdx + 8))?;
    a.mov(r8, rcx)?;
    a.shr(r8, 63)?;
    a.btr(rcx, 63)?;
    // The offset.
    next(a)?;
    a.xor(rdx, rdx)?;
    a.div(rcx)?;
    a.add(rbx, rdx)?;
    // Control bits in rbp: 61-60 size, 59-58 value bias, 57 read.
    next(a)?;
    a.mov(rbp, rax)?;
    // The value.
    next(a)?;
    let mut biased = a.create_label();
    let mut scratch_value = a.create_label();
    let mut past_ram = a.create_label();
    a.mov(rcx, rbp)?;
    a.shr(rcx, 58)?;
    a.and(rcx, 3)?;
    a.jz(biased)?;
    a.cmp(rcx, 1)?;
    a.je(scratch_value)?;
    a.cmp(rcx, 2)?;
    a.je(past_ram)?;
    let mut value_done = a.create_label();
    a.jmp(value_done)?;
    a.set_label(&mut biased)?;
    a.and(rax, 7)?;
    a.jmp(value_done)?;
    a.set_label(&mut scratch_value)?;
    a.and(rax, r9)?;
    a.add(rax, r10)?;
    a.jmp(value_done)?;
    a.set_label(&mut past_ram)?;
    a.and(rax, 0xffff)?;
    a.add(rax, qword_ptr(rsi + 40))?;
    a.set_label(&mut value_done)?;
    // Dispatch on kind, direction and size.
    let mut mmio = a.create_label();
    let mut done = a.create_label();
    a.mov(rcx, rbp)?;
    a.shr(rcx, 60)?;
    a.and(rcx, 3)?;
    a.test(r8, r8)?;
    a.jnz(mmio)?;
    // Port I/O: 8-byte accesses become 4-byte ones.
    a.mov(rdx, rbx)?;
    let (mut p1, mut p2, mut pin) = (a.create_label(), a.create_label(), a.create_label());
    a.bt(rbp, 57)?;
    a.jc(pin)?;
    a.cmp(rcx, 0)?;
    a.je(p1)?;
    a.cmp(rcx, 1)?;
    a.je(p2)?;
    a.out(dx, eax)?;
    a.jmp(done)?;
    a.set_label(&mut p1)?;
    a.out(dx, al)?;
    a.jmp(done)?;
    a.set_label(&mut p2)?;
    a.out(dx, ax)?;
    a.jmp(done)?;
    a.set_label(&mut pin)?;
    let (mut i1, mut i2) = (a.create_label(), a.create_label());
    a.cmp(rcx, 0)?;
    a.je(i1)?;
    a.cmp(rcx, 1)?;
    a.je(i2)?;
    a.in_(eax, dx)?;
    a.jmp(done)?;
    a.set_label(&mut i1)?;
    a.in_(al, dx)?;
    a.jmp(done)?;
    a.set_label(&mut i2)?;
    a.in_(ax, dx)?;
    a.jmp(done)?;
    // MMIO, aligned to the access size.
    a.set_label(&mut mmio)?;
    let (mut m1, mut m2, mut m4, mut min) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    let (mut r1, mut r2, mut r4) = (a.create_label(), a.create_label(), a.create_label());
    a.bt(rbp, 57)?;
    a.jc(min)?;
    a.cmp(rcx, 0)?;
    a.je(m1)?;
    a.cmp(rcx, 1)?;
    a.je(m2)?;
    a.cmp(rcx, 2)?;
    a.je(m4)?;
    a.and(rbx, -8i32)?;
    a.mov(qword_ptr(rbx), rax)?;
    a.jmp(done)?;
    a.set_label(&mut m1)?;
    a.mov(byte_ptr(rbx), al)?;
    a.jmp(done)?;
    a.set_label(&mut m2)?;
    a.and(rbx, -2i32)?;
    a.mov(word_ptr(rbx), ax)?;
    a.jmp(done)?;
    a.set_label(&mut m4)?;
    a.and(rbx, -4i32)?;
    a.mov(dword_ptr(rbx), eax)?;
    a.jmp(done)?;
    a.set_label(&mut min)?;
    a.cmp(rcx, 0)?;
    a.je(r1)?;
    a.cmp(rcx, 1)?;
    a.je(r2)?;
    a.cmp(rcx, 2)?;
    a.je(r4)?;
    a.and(rbx, -8i32)?;
    a.mov(rax, qword_ptr(rbx))?;
    a.jmp(done)?;
    a.set_label(&mut r1)?;
    a.mov(al, byte_ptr(rbx))?;
    a.jmp(done)?;
    a.set_label(&mut r2)?;
    a.and(rbx, -2i32)?;
    a.mov(ax, word_ptr(rbx))?;
    a.jmp(done)?;
    a.set_label(&mut r4)?;
    a.and(rbx, -4i32)?;
    a.mov(eax, dword_ptr(rbx))?;
    a.set_label(&mut done)?;
    a.inc(r13)?;
    a.dec(r14)?;
    a.jnz(top)?;
    // How many fw_cfg descriptors were answered, then the last heartbeat: every operation
    // done.
    a.mov(rax, FW_CFG_ANSWERED)?;
    a.mov(eax, dword_ptr(rax))?;
    a.mov(dx, u32::from(super::REPORT_PORT + REPORT_FW_CFG_ANSWERED))?;
    a.out(dx, eax)?;
    heartbeat(a, beat)
}

/// Every [`SETUP_EVERY`] operations: a driver-like set-up of a random virtio function (see
/// [`SETUP_EVERY`]). Uses rax, rbx, rcx, rdx, rdi, r8; keeps rsi (the parameters) and r9-r15.
fn driver_setup(a: &mut iced_x86::code_asm::CodeAssembler) -> Result<(), iced_x86::IcedError> {
    let mut skip = a.create_label();
    a.mov(rax, r13)?;
    a.and(eax, (SETUP_EVERY - 1) as u32)?;
    a.cmp(eax, (SETUP_EVERY / 2) as u32)?;
    a.jne(skip)?;
    a.mov(rcx, qword_ptr(rsi + 48))?;
    a.test(rcx, rcx)?;
    a.jz(skip)?;
    next(a)?;
    a.xor(rdx, rdx)?;
    a.div(rcx)?;
    a.mov(rdi, VIRTIO_BARS)?;
    a.mov(rbx, qword_ptr(rdi + rdx * 8))?;
    // Reset, ACKNOWLEDGE | DRIVER, VERSION_1 plus a random subset of the low features.
    a.mov(byte_ptr(rbx + 0x14), 0)?;
    a.mov(byte_ptr(rbx + 0x14), 3)?;
    a.mov(dword_ptr(rbx + 0x08), 1)?;
    a.mov(dword_ptr(rbx + 0x0c), 1)?;
    a.mov(dword_ptr(rbx), 0)?;
    a.mov(edi, dword_ptr(rbx + 0x04))?;
    next(a)?;
    a.and(edi, eax)?;
    a.mov(dword_ptr(rbx + 0x08), 0)?;
    a.mov(dword_ptr(rbx + 0x0c), edi)?;
    a.mov(byte_ptr(rbx + 0x14), 0x0b)?;
    // Up to four queues.
    a.movzx(r8d, word_ptr(rbx + 0x12))?;
    let mut few = a.create_label();
    a.cmp(r8d, 4)?;
    a.jbe(few)?;
    a.mov(r8d, 4u32)?;
    a.set_label(&mut few)?;
    a.xor(edi, edi)?;
    let (mut queue, mut queues_done) = (a.create_label(), a.create_label());
    a.set_label(&mut queue)?;
    a.cmp(edi, r8d)?;
    a.jae(queues_done)?;
    a.mov(word_ptr(rbx + 0x16), di)?;
    // Size: the maximum shifted right by 0-3 (a power of two when the maximum is), at least 1.
    a.movzx(edx, word_ptr(rbx + 0x18))?;
    next(a)?;
    a.and(eax, 3)?;
    a.mov(ecx, eax)?;
    a.shr(edx, cl)?;
    let mut sized = a.create_label();
    a.test(edx, edx)?;
    a.jnz(sized)?;
    a.mov(edx, 1u32)?;
    a.set_label(&mut sized)?;
    a.mov(word_ptr(rbx + 0x18), dx)?;
    // Descriptor table, available and used rings: random pages of the scratch area.
    for reg in [0x20, 0x28, 0x30] {
        next(a)?;
        a.and(rax, r9)?;
        a.and(rax, -4096i32)?;
        a.add(rax, r10)?;
        a.mov(qword_ptr(rbx + reg), rax)?;
    }
    a.mov(word_ptr(rbx + 0x1c), 1)?;
    a.inc(edi)?;
    a.jmp(queue)?;
    a.set_label(&mut queues_done)?;
    // FEATURES_OK | DRIVER_OK, then a notify for each queue.
    a.mov(byte_ptr(rbx + 0x14), 0x0f)?;
    a.xor(edi, edi)?;
    let (mut notify, mut notified) = (a.create_label(), a.create_label());
    a.set_label(&mut notify)?;
    a.cmp(edi, r8d)?;
    a.jae(notified)?;
    a.mov(word_ptr(rbx + rdi * 4 + 0x3000), di)?;
    a.inc(edi)?;
    a.jmp(notify)?;
    a.set_label(&mut notified)?;
    a.nop()?;
    a.set_label(&mut skip)?;
    a.nop()
}

/// fw_cfg's signature through the ports and by DMA (into the scratch area), each reported
/// (see [`REPORT_FW_CFG_PORT`]); zeroes the answered count. Uses rax, rbx, rcx, rdx, rdi;
/// keeps rsi and r9-r15.
fn fw_cfg_signatures(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rax, FW_CFG_ANSWERED)?;
    a.mov(qword_ptr(rax), 0)?;
    // Selector 0, then the item's four bytes one by one from the data port.
    a.mov(dx, u32::from(FW_CFG_SELECTOR_PORT))?;
    a.xor(eax, eax)?;
    a.out(dx, ax)?;
    a.mov(dx, u32::from(FW_CFG_DATA_PORT))?;
    a.xor(ebx, ebx)?;
    for k in 0..4u32 {
        a.in_(al, dx)?;
        a.movzx(ecx, al)?;
        if k > 0 {
            a.shl(ecx, 8 * k)?;
        }
        a.or(ebx, ecx)?;
    }
    a.mov(eax, ebx)?;
    a.mov(dx, u32::from(super::REPORT_PORT + REPORT_FW_CFG_PORT))?;
    a.out(dx, eax)?;
    // A descriptor at the scratch area's start (big-endian fields): select key 0 and read its
    // four bytes to 16 bytes further on.
    a.mov(rdi, r10)?;
    a.mov(dword_ptr(rdi), (DMA_SELECT | DMA_READ).swap_bytes() as i32)?;
    a.mov(dword_ptr(rdi + 4), 4u32.swap_bytes() as i32)?;
    a.lea(rax, qword_ptr(rdi + 16))?;
    a.bswap(rax)?;
    a.mov(qword_ptr(rdi + 8), rax)?;
    a.mov(dword_ptr(rdi + 16), 0)?;
    dma_at_rdi(a)?;
    let mut answered = a.create_label();
    a.mov(eax, dword_ptr(rdi + 16))?;
    a.cmp(dword_ptr(rdi), 0)?;
    a.je(answered)?;
    a.mov(eax, u32::MAX)?;
    a.set_label(&mut answered)?;
    a.mov(dx, u32::from(super::REPORT_PORT + REPORT_FW_CFG_DMA))?;
    a.out(dx, eax)
}

/// Hands the descriptor address in rdi to fw_cfg's DMA register (big-endian halves, the low
/// one starts it). Uses rax and rdx.
fn dma_at_rdi(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rax, rdi)?;
    a.shr(rax, 32)?;
    a.bswap(eax)?;
    a.mov(dx, u32::from(FW_CFG_DMA_PORT))?;
    a.out(dx, eax)?;
    a.mov(eax, edi)?;
    a.bswap(eax)?;
    a.mov(dx, u32::from(FW_CFG_DMA_PORT + 4))?;
    a.out(dx, eax)
}

/// Every [`FW_CFG_EVERY`] operations: a random fw_cfg DMA (see the module's description).
/// Uses rax, rbx, rcx, rdx, rdi; keeps rsi and r9-r15.
fn fw_cfg_dma(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut skip = a.create_label();
    a.mov(rax, r13)?;
    a.and(eax, (FW_CFG_EVERY - 1) as u32)?;
    a.cmp(eax, (FW_CFG_EVERY / 4) as u32)?;
    a.jne(skip)?;
    // rcx: the descriptor, at a random 16-byte-aligned place of the scratch area.
    next(a)?;
    a.and(rax, r9)?;
    a.and(rax, -16i32)?;
    a.add(rax, r10)?;
    a.mov(rcx, rax)?;
    // Control: a key of 0-0x3f and any of the five control bits.
    next(a)?;
    a.and(eax, 0x003f_001f)?;
    a.bswap(eax)?;
    a.mov(dword_ptr(rcx), eax)?;
    // Length: up to 8 KiB, or (one time in four) anything.
    next(a)?;
    a.mov(rbx, rax)?;
    a.shr(rbx, 62)?;
    let mut any_length = a.create_label();
    a.jz(any_length)?;
    a.and(eax, 0x1fff)?;
    a.set_label(&mut any_length)?;
    a.bswap(eax)?;
    a.mov(dword_ptr(rcx + 4), eax)?;
    // Target: the scratch area, just past the end of RAM, or anywhere.
    next(a)?;
    random_address(a)?;
    a.bswap(rax)?;
    a.mov(qword_ptr(rcx + 8), rax)?;
    // The address handed over: the descriptor, or (one time in four) past RAM or anywhere.
    next(a)?;
    a.mov(rdi, rcx)?;
    a.mov(rbx, rax)?;
    a.shr(rbx, 62)?;
    let mut chosen = a.create_label();
    a.jnz(chosen)?;
    next(a)?;
    random_address(a)?;
    a.mov(rdi, rax)?;
    a.set_label(&mut chosen)?;
    dma_at_rdi(a)?;
    // Answered: the device wrote back 0 or the error bit (big-endian).
    a.cmp(rdi, rcx)?;
    a.jne(skip)?;
    let mut answered = a.create_label();
    a.mov(eax, dword_ptr(rcx))?;
    a.test(eax, eax)?;
    a.je(answered)?;
    a.cmp(eax, DMA_ERROR.swap_bytes())?;
    a.jne(skip)?;
    a.set_label(&mut answered)?;
    a.mov(rax, FW_CFG_ANSWERED)?;
    a.inc(qword_ptr(rax))?;
    a.set_label(&mut skip)?;
    a.nop()
}

/// rax (a random value) becomes an address: in the scratch area (half the time), just past
/// the end of RAM, or anything. Uses rbx.
fn random_address(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let (mut past_ram, mut done) = (a.create_label(), a.create_label());
    a.mov(rbx, rax)?;
    a.shr(rbx, 62)?;
    a.cmp(ebx, 2)?;
    a.je(past_ram)?;
    a.ja(done)?;
    a.and(rax, r9)?;
    a.add(rax, r10)?;
    a.jmp(done)?;
    a.set_label(&mut past_ram)?;
    a.and(rax, 0xffff)?;
    a.add(rax, qword_ptr(rsi + 40))?;
    a.set_label(&mut done)?;
    a.nop()
}

/// rax = the next xorshift64 value (state in r15). Clobbers nothing else.
fn next(a: &mut iced_x86::code_asm::CodeAssembler) -> Result<(), iced_x86::IcedError> {
    a.mov(rax, r15)?;
    a.shl(rax, 13)?;
    a.xor(r15, rax)?;
    a.mov(rax, r15)?;
    a.shr(rax, 7)?;
    a.xor(r15, rax)?;
    a.mov(rax, r15)?;
    a.shl(rax, 17)?;
    a.xor(r15, rax)?;
    a.mov(rax, r15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_assembles_and_its_parameters_fit_the_data_page() {
        let g = hostile().unwrap();
        assert!(!g.code.is_empty());
        let targets = vec![
            Target {
                base: 0x3f8,
                len: 8,
                mmio: false
            };
            MAX_TARGETS + 5
        ];
        let p = params(
            0,
            0,
            &targets,
            &[0xd800_0000; 20],
            (4 << 20, 4 << 20),
            8 << 20,
        );
        assert_eq!(p.len() as u64, VIRTIO_BARS - PARAMS + 8 * MAX_VIRTIO as u64);
        assert!(PARAMS + p.len() as u64 <= GUEST_DATA_ADDR + 0x1000);
        // Seed made odd (never 0), operations at least 1, the mask a power of two minus one.
        assert_eq!(&p[..8], &1u64.to_le_bytes());
        assert_eq!(&p[8..16], &1u64.to_le_bytes());
        assert_eq!(&p[32..40], &((4u64 << 20) - 1).to_le_bytes());
    }
}
