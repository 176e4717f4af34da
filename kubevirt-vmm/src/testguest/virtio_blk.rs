//! A polling virtio-blk driver running at CPL 3: the in-guest proof for the PCI root complex,
//! the virtio-pci transport and the block device.
//!
//! [`virtio_blk_check`] scans bus 0 through ports 0xCF8/0xCFC for virtio-blk functions
//! (vendor 0x1af4, device 0x1042). For each one it finds, in slot order, it:
//! reads BAR 0 and walks the vendor capabilities to find the common, notify and device
//! configuration regions; resets the device, negotiates features (VERSION_1 plus whatever of
//! SEG_MAX, RO, BLK_SIZE and FLUSH is offered); sets up queue 0 with [`QUEUE_SIZE`] entries;
//! then submits, notifying once per batch and polling the used ring (no interrupts):
//! batch 1 = write [`IO_LEN`] bytes of [`pattern`] at sector [`IO_SECTOR`], flush;
//! batch 2 = read them back, `GET_ID`. It compares what it read with what it wrote.
//!
//! A virtio-console (device 0x1043), if present, gets its transmit queue set up as well and
//! [`CONSOLE_TEXT`] sent on it. A virtio-rng function (device 0x1044), if present, gets the
//! same set-up with no
//! device-specific feature and one [`RNG_LEN`]-byte buffer to fill (results at
//! [`RNG_RESULTS`]).
//!
//! Everything the host checks lands in guest memory at [`RESULTS`] + 0x100 per device (the
//! `RES_*` offsets), so reporting costs no exits. The guest exits 0 when the scan is done.

use iced_x86::code_asm::{
    CodeAssembler, al, byte_ptr, dword_ptr, dx, eax, ebx, ecx, edi, esi, ptr, qword_ptr, r8, r8d,
    r9, r9d, r10d, r11, r11d, r12, r12d, r13d, r14, r14d, r15, rax, rbp, rbx, rcx, rdi, rsi,
    word_ptr,
};

use super::{GUEST_DATA_ADDR, GuestAsm, TestGuest, TestGuestError};

/// Where results go: 0x100 bytes per device found, in scan order.
pub const RESULTS: u64 = GUEST_DATA_ADDR;
/// Offset (in the first device's block) of the number of devices found (u32).
pub const RES_FOUND: u64 = 0xf00;
/// PCI slot of the device (u32).
pub const RES_SLOT: u64 = 0x00;
/// Device features as read (u64).
pub const RES_FEATURES: u64 = 0x08;
/// Device status read back after setting `FEATURES_OK` (u32).
pub const RES_STATUS: u64 = 0x10;
/// `capacity` from the device configuration, in sectors (u64).
pub const RES_CAPACITY: u64 = 0x18;
/// Status bytes of the write, flush, read and `GET_ID` requests (one u32 each; 0xff = the
/// device never wrote it).
pub const RES_REQ_STATUS: u64 = 0x20;
/// 0 if the data read back equals the data written, 1 if not (u32).
pub const RES_COMPARE: u64 = 0x30;
/// The 20-byte ID `GET_ID` returned.
pub const RES_SERIAL: u64 = 0x40;
/// The used ring index at the end (u32).
pub const RES_USED_IDX: u64 = 0x60;

/// Each device's queue memory: descriptors, then avail ring (+0x1000), used ring (+0x2000),
/// request headers (+0x3000); 0x4000 per device.
pub const QUEUES: u64 = 0x30_0000;
/// The pattern written to every device.
pub const WRITE_BUF: u64 = 0x31_0000;
/// Where device *k* reads back into: `READ_BUF + k * IO_LEN`.
pub const READ_BUF: u64 = 0x32_0000;
/// First sector written and read.
pub const IO_SECTOR: u64 = 8;
/// Bytes written and read.
pub const IO_LEN: u32 = 0x1_0000;
/// Queue entries the driver uses.
pub const QUEUE_SIZE: u16 = 16;
/// Devices the driver handles (more are counted but not driven).
pub const MAX_DEVICES: u32 = 2;
/// Offset (in the first device's block) of the number of virtio-rng functions found (u32).
pub const RES_RNG_FOUND: u64 = 0xf04;
/// Where a virtio-rng's results go (slot, features, status as for a disk).
pub const RNG_RESULTS: u64 = RESULTS + 0x200;
/// The used length the rng device reported for the [`RNG_LEN`]-byte buffer (u32).
pub const RES_RNG_USED_LEN: u64 = 0x70;
/// The buffer the rng fills.
pub const RNG_BUF: u64 = 0x34_0000;
/// Its length.
pub const RNG_LEN: u32 = 64;
/// Offset (in the first device's block) of the number of virtio-console functions found.
pub const RES_CONSOLE_FOUND: u64 = 0xf0c;
/// What the driver writes on a virtio-console's transmit queue.
pub const CONSOLE_TEXT: &[u8] = b"hello from virtio-console\n";
const VIRTIO_CONSOLE_PCI_ID: u32 = 0x1043_1af4;
/// Scratch: 0 while driving a disk, 1 the rng, 2 the console.
const KIND_ADDR: u64 = RESULTS + 0xf08;
const VIRTIO_RNG_PCI_ID: u32 = 0x1044_1af4;

/// Dword `i` of the pattern the driver writes.
pub fn pattern(i: u32) -> u32 {
    i.wrapping_mul(0x9e37_79b9) ^ 0x5a5a_0000
}

const VIRTIO_BLK_PCI_ID: u32 = 0x1042_1af4;
const F_NEXT: u32 = 1;
const F_WRITE: u32 = 2;
const OFFERED_LOW: u32 = (1 << 2) | (1 << 5) | (1 << 6) | (1 << 9);

/// Where a descriptor's buffer is: an absolute address or relative to a register.
#[derive(Clone, Copy)]
enum At {
    /// Already in RAX.
    Rax,
    Abs(u64),
    Rbp(i32),
    R15(i32),
    ReadBuf,
}

/// Emits a descriptor `i` of the table at RBP. Clobbers RAX, RCX.
fn desc(
    a: &mut CodeAssembler,
    i: i32,
    at: At,
    len: u32,
    flags: u32,
    next: u32,
) -> Result<(), iced_x86::IcedError> {
    match at {
        At::Rax => {}
        At::Abs(v) => a.mov(rax, v)?,
        At::Rbp(o) => a.lea(rax, ptr(rbp + o))?,
        At::R15(o) => a.lea(rax, ptr(r15 + o))?,
        At::ReadBuf => {
            // READ_BUF + k * IO_LEN, k in R12.
            a.mov(rax, r12)?;
            a.shl(rax, IO_LEN.trailing_zeros())?;
            a.mov(rcx, READ_BUF)?;
            a.add(rax, rcx)?;
        }
    }
    let d = i * 16;
    a.mov(qword_ptr(rbp + d), rax)?;
    a.mov(dword_ptr(rbp + d + 8), len)?;
    a.mov(word_ptr(rbp + d + 12), flags)?;
    a.mov(word_ptr(rbp + d + 14), next)
}

/// Assembles the driver.
pub fn virtio_blk_check() -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("virtio_blk_check")?;
    let r = (|| {
        let a = g.a();
        let cfg_read = a.create_label();
        let drive = a.create_label();

        // The pattern.
        a.mov(rdi, WRITE_BUF)?;
        a.xor(ecx, ecx)?;
        let mut fill = a.create_label();
        a.set_label(&mut fill)?;
        a.imul_3(eax, ecx, 0x9e37_79b9u32 as i32)?;
        a.xor(eax, 0x5a5a_0000)?;
        a.mov(dword_ptr(rdi + rcx * 4), eax)?;
        a.inc(ecx)?;
        a.cmp(ecx, IO_LEN / 4)?;
        a.jb(fill)?;

        // Scan bus 0: R13 = slot, R12 = devices found.
        a.xor(r12d, r12d)?;
        a.xor(r13d, r13d)?;
        let mut scan = a.create_label();
        let mut next_slot = a.create_label();
        a.set_label(&mut scan)?;
        a.xor(esi, esi)?;
        a.call(cfg_read)?;
        let mut not_blk = a.create_label();
        a.cmp(eax, VIRTIO_BLK_PCI_ID)?;
        a.jne(not_blk)?;
        a.cmp(r12d, MAX_DEVICES)?;
        let mut count = a.create_label();
        a.jae(count)?;
        a.mov(rax, KIND_ADDR)?;
        a.mov(dword_ptr(rax), 0u32)?;
        a.call(drive)?;
        a.set_label(&mut count)?;
        a.inc(r12d)?;
        a.jmp(next_slot)?;
        // A virtio-rng: driven once, as device index 2.
        a.set_label(&mut not_blk)?;
        let mut not_rng = a.create_label();
        a.cmp(eax, VIRTIO_RNG_PCI_ID)?;
        a.jne(not_rng)?;
        a.mov(rax, RESULTS + RES_RNG_FOUND)?;
        a.cmp(dword_ptr(rax), 0)?;
        a.jne(next_slot)?;
        a.mov(dword_ptr(rax), 1u32)?;
        a.mov(rax, KIND_ADDR)?;
        a.mov(dword_ptr(rax), 1u32)?;
        a.push(r12)?;
        a.mov(r12d, 2u32)?;
        a.call(drive)?;
        a.pop(r12)?;
        a.jmp(next_slot)?;
        // A virtio-console: driven once, as device index 3.
        a.set_label(&mut not_rng)?;
        a.cmp(eax, VIRTIO_CONSOLE_PCI_ID)?;
        a.jne(next_slot)?;
        a.mov(rax, RESULTS + RES_CONSOLE_FOUND)?;
        a.cmp(dword_ptr(rax), 0)?;
        a.jne(next_slot)?;
        a.mov(dword_ptr(rax), 1u32)?;
        a.mov(rax, KIND_ADDR)?;
        a.mov(dword_ptr(rax), 2u32)?;
        a.push(r12)?;
        a.mov(r12d, 3u32)?;
        a.call(drive)?;
        a.pop(r12)?;
        a.set_label(&mut next_slot)?;
        a.inc(r13d)?;
        a.cmp(r13d, 32)?;
        a.jb(scan)?;
        a.mov(rax, RESULTS + RES_FOUND)?;
        a.mov(dword_ptr(rax), r12d)?;
        Ok::<_, iced_x86::IcedError>((cfg_read, drive))
    })();
    let (mut cfg_read, mut drive) = g.check(r)?;
    g.exit(0)?;

    let r = (|| {
        let a = g.a();
        // cfg_read: EAX = config dword at byte offset ESI of slot R13 (bus 0, function 0).
        a.set_label(&mut cfg_read)?;
        a.mov(eax, r13d)?;
        a.shl(eax, 11)?;
        a.or(eax, esi)?;
        a.or(eax, 0x8000_0000u32 as i32)?;
        a.mov(dx, 0xcf8u32)?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcfcu32)?;
        a.in_(eax, dx)?;
        a.ret()?;

        // drive: device index R12, slot R13.
        a.set_label(&mut drive)?;
        a.mov(r15, r12)?;
        a.shl(r15, 8)?;
        a.mov(rax, RESULTS)?;
        a.add(r15, rax)?;
        a.mov(dword_ptr(r15 + RES_SLOT as i32), r13d)?;
        // BAR 0 (64-bit memory BAR).
        a.mov(esi, 0x10u32)?;
        a.call(cfg_read)?;
        a.and(eax, 0xffff_fff0u32 as i32)?;
        a.mov(r14d, eax)?;
        a.mov(esi, 0x14u32)?;
        a.call(cfg_read)?;
        a.shl(rax, 32)?;
        a.or(r14, rax)?;
        // Capabilities: R8 = common, R9 = notify, R10 = multiplier, R11 = device cfg.
        a.mov(esi, 0x34u32)?;
        a.call(cfg_read)?;
        a.movzx(ebx, al)?;
        let mut cap_loop = a.create_label();
        let mut cap_next = a.create_label();
        let mut caps_done = a.create_label();
        let mut not_common = a.create_label();
        let mut not_device = a.create_label();
        a.set_label(&mut cap_loop)?;
        a.test(ebx, ebx)?;
        a.jz(caps_done)?;
        a.and(ebx, 0xfc)?;
        a.mov(esi, ebx)?;
        a.call(cfg_read)?;
        a.mov(ecx, eax)?;
        a.cmp(al, 0x09)?;
        a.jne(cap_next)?;
        a.mov(edi, ecx)?;
        a.shr(edi, 24)?;
        a.lea(esi, ptr(rbx + 8))?;
        a.call(cfg_read)?;
        a.cmp(edi, 1)?;
        a.jne(not_common)?;
        a.mov(r8d, eax)?;
        a.jmp(cap_next)?;
        a.set_label(&mut not_common)?;
        a.cmp(edi, 4)?;
        a.jne(not_device)?;
        a.mov(r11d, eax)?;
        a.jmp(cap_next)?;
        a.set_label(&mut not_device)?;
        a.cmp(edi, 2)?;
        a.jne(cap_next)?;
        a.mov(r9d, eax)?;
        a.lea(esi, ptr(rbx + 16))?;
        a.call(cfg_read)?;
        a.mov(r10d, eax)?;
        a.set_label(&mut cap_next)?;
        a.mov(ebx, ecx)?;
        a.shr(ebx, 8)?;
        a.and(ebx, 0xff)?;
        a.jmp(cap_loop)?;
        a.set_label(&mut caps_done)?;

        // RSI = common configuration.
        a.lea(rsi, ptr(r14 + r8))?;
        for s in [0u32, 1, 3] {
            a.mov(byte_ptr(rsi + 0x14), s)?;
        }
        for word in [0u32, 1] {
            a.mov(dword_ptr(rsi), word)?;
            a.mov(eax, dword_ptr(rsi + 0x04))?;
            a.mov(
                dword_ptr(r15 + (RES_FEATURES as i32 + 4 * word as i32)),
                eax,
            )?;
        }
        a.mov(eax, dword_ptr(r15 + RES_FEATURES as i32))?;
        a.and(eax, OFFERED_LOW as i32)?;
        // The rng acknowledges no device-specific feature.
        a.mov(rcx, KIND_ADDR)?;
        let mut keep = a.create_label();
        a.cmp(dword_ptr(rcx), 0)?;
        a.je(keep)?;
        a.xor(eax, eax)?;
        a.set_label(&mut keep)?;
        a.mov(dword_ptr(rsi + 0x08), 0u32)?;
        a.mov(dword_ptr(rsi + 0x0c), eax)?;
        a.mov(dword_ptr(rsi + 0x08), 1u32)?;
        a.mov(dword_ptr(rsi + 0x0c), 1u32)?;
        a.mov(byte_ptr(rsi + 0x14), 0x0bu32)?;
        a.movzx(eax, byte_ptr(rsi + 0x14))?;
        a.mov(dword_ptr(r15 + RES_STATUS as i32), eax)?;
        let mut give_up = a.create_label();
        a.test(al, 8)?;
        a.jz(give_up)?;

        // Queue 0 at RBP = QUEUES + k * 0x4000.
        a.mov(rbp, r12)?;
        a.shl(rbp, 14)?;
        a.mov(rax, QUEUES)?;
        a.add(rbp, rax)?;
        a.mov(word_ptr(rsi + 0x16), 0u32)?;
        a.mov(word_ptr(rsi + 0x18), u32::from(QUEUE_SIZE))?;
        a.mov(qword_ptr(rsi + 0x20), rbp)?;
        a.lea(rax, ptr(rbp + 0x1000))?;
        a.mov(qword_ptr(rsi + 0x28), rax)?;
        a.lea(rax, ptr(rbp + 0x2000))?;
        a.mov(qword_ptr(rsi + 0x30), rax)?;
        // The console also needs queue 1 (transmit): tables at +0x800, notify address in R8.
        let mut one_queue = a.create_label();
        a.mov(rax, KIND_ADDR)?;
        a.cmp(dword_ptr(rax), 2)?;
        a.jne(one_queue)?;
        a.mov(word_ptr(rsi + 0x16), 1u32)?;
        a.mov(word_ptr(rsi + 0x18), u32::from(QUEUE_SIZE))?;
        a.lea(rax, ptr(rbp + 0x800))?;
        a.mov(qword_ptr(rsi + 0x20), rax)?;
        a.lea(rax, ptr(rbp + 0x1800))?;
        a.mov(qword_ptr(rsi + 0x28), rax)?;
        a.lea(rax, ptr(rbp + 0x2800))?;
        a.mov(qword_ptr(rsi + 0x30), rax)?;
        a.movzx(eax, word_ptr(rsi + 0x1e))?;
        a.imul_2(eax, r10d)?;
        a.add(eax, r9d)?;
        a.mov(r8, r14)?;
        a.add(r8, rax)?;
        a.mov(word_ptr(rsi + 0x1c), 1u32)?;
        a.mov(word_ptr(rsi + 0x16), 0u32)?;
        a.set_label(&mut one_queue)?;
        // R9 = notify address = BAR + notify offset + queue_notify_off * multiplier.
        a.movzx(eax, word_ptr(rsi + 0x1e))?;
        a.imul_2(eax, r10d)?;
        a.add(eax, r9d)?;
        a.mov(r9, r14)?;
        a.add(r9, rax)?;
        a.mov(word_ptr(rsi + 0x1c), 1u32)?;
        a.mov(byte_ptr(rsi + 0x14), 0x0fu32)?;
        let mut rng = a.create_label();
        let mut console = a.create_label();
        a.mov(rax, KIND_ADDR)?;
        a.cmp(dword_ptr(rax), 1)?;
        a.je(rng)?;
        a.cmp(dword_ptr(rax), 2)?;
        a.je(console)?;
        // Capacity (8-byte read of the device configuration).
        a.mov(rax, qword_ptr(r14 + r11))?;
        a.mov(qword_ptr(r15 + RES_CAPACITY as i32), rax)?;

        // Status bytes start as 0xff; headers: OUT, FLUSH, IN, GET_ID.
        for i in 0..4 {
            a.mov(dword_ptr(r15 + (RES_REQ_STATUS as i32 + 4 * i)), 0xffu32)?;
        }
        for (i, kind) in [1u32, 4, 0, 8].into_iter().enumerate() {
            let h = 0x3000 + 16 * i as i32;
            a.mov(dword_ptr(rbp + h), kind)?;
            a.mov(dword_ptr(rbp + h + 4), 0u32)?;
            a.mov(qword_ptr(rbp + h + 8), IO_SECTOR as i32)?;
        }
        let st = |i: i32| At::R15(RES_REQ_STATUS as i32 + 4 * i);
        desc(a, 0, At::Rbp(0x3000), 16, F_NEXT, 1)?;
        desc(a, 1, At::Abs(WRITE_BUF), IO_LEN, F_NEXT, 2)?;
        desc(a, 2, st(0), 1, F_WRITE, 0)?;
        desc(a, 3, At::Rbp(0x3010), 16, F_NEXT, 4)?;
        desc(a, 4, st(1), 1, F_WRITE, 0)?;
        desc(a, 5, At::Rbp(0x3020), 16, F_NEXT, 6)?;
        desc(a, 6, At::ReadBuf, IO_LEN, F_WRITE | F_NEXT, 7)?;
        desc(a, 7, st(2), 1, F_WRITE, 0)?;
        desc(a, 8, At::Rbp(0x3030), 16, F_NEXT, 9)?;
        desc(a, 9, At::R15(RES_SERIAL as i32), 20, F_WRITE | F_NEXT, 10)?;
        desc(a, 10, st(3), 1, F_WRITE, 0)?;

        // Two batches: (write, flush), then (read, GET_ID). One notify each, then poll.
        for (batch, heads) in [[0u32, 3], [5, 8]].into_iter().enumerate() {
            let first = 2 * batch as i32;
            a.mov(word_ptr(rbp + (0x1004 + 2 * first)), heads[0])?;
            a.mov(word_ptr(rbp + (0x1004 + 2 * first + 2)), heads[1])?;
            a.mov(word_ptr(rbp + 0x1002), (first + 2) as u32)?;
            a.mfence()?;
            a.mov(word_ptr(r9), 0u32)?;
            let mut poll = a.create_label();
            a.set_label(&mut poll)?;
            a.pause()?;
            a.movzx(eax, word_ptr(rbp + 0x2002))?;
            a.cmp(eax, (first + 2) as u32)?;
            a.jb(poll)?;
        }
        a.movzx(eax, word_ptr(rbp + 0x2002))?;
        a.mov(dword_ptr(r15 + RES_USED_IDX as i32), eax)?;

        // Compare what was read with what was written.
        a.mov(rsi, WRITE_BUF)?;
        a.mov(rdi, r12)?;
        a.shl(rdi, IO_LEN.trailing_zeros())?;
        a.mov(rax, READ_BUF)?;
        a.add(rdi, rax)?;
        a.mov(ecx, IO_LEN / 8)?;
        a.xor(eax, eax)?;
        a.repe().cmpsq()?;
        let mut equal = a.create_label();
        a.je(equal)?;
        a.mov(eax, 1u32)?;
        a.set_label(&mut equal)?;
        a.mov(dword_ptr(r15 + RES_COMPARE as i32), eax)?;
        a.set_label(&mut give_up)?;
        a.ret()?;

        // The rng: one device-writable buffer, one notify, poll, record the used length.
        a.set_label(&mut rng)?;
        desc(a, 0, At::Abs(RNG_BUF), RNG_LEN, F_WRITE, 0)?;
        a.mov(word_ptr(rbp + 0x1004), 0u32)?;
        a.mov(word_ptr(rbp + 0x1002), 1u32)?;
        a.mfence()?;
        a.mov(word_ptr(r9), 0u32)?;
        let mut poll = a.create_label();
        a.set_label(&mut poll)?;
        a.pause()?;
        a.movzx(eax, word_ptr(rbp + 0x2002))?;
        a.cmp(eax, 1u32)?;
        a.jb(poll)?;
        a.mov(eax, dword_ptr(rbp + 0x2008))?;
        a.mov(dword_ptr(r15 + RES_RNG_USED_LEN as i32), eax)?;
        a.ret()?;

        // The console: CONSOLE_TEXT in one buffer on the transmit queue, notify, poll.
        let mut text = a.create_label();
        a.set_label(&mut console)?;
        a.lea(rax, ptr(text))?;
        desc(a, 0x80, At::Rax, CONSOLE_TEXT.len() as u32, 0, 0)?;
        a.mov(word_ptr(rbp + 0x1804), 0u32)?;
        a.mov(word_ptr(rbp + 0x1802), 1u32)?;
        a.mfence()?;
        a.mov(word_ptr(r8), 1u32)?;
        let mut poll_tx = a.create_label();
        a.set_label(&mut poll_tx)?;
        a.pause()?;
        a.movzx(eax, word_ptr(rbp + 0x2802))?;
        a.cmp(eax, 1u32)?;
        a.jb(poll_tx)?;
        a.ret()?;
        a.set_label(&mut text)?;
        a.db(CONSOLE_TEXT)
    })();
    g.check(r)?;
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_assembles_and_its_buffers_fit_the_test_guest_memory() {
        let g = virtio_blk_check().unwrap();
        assert!(!g.code.is_empty());
        let end = READ_BUF + u64::from(MAX_DEVICES) * u64::from(IO_LEN);
        assert!(end <= super::super::GUEST_MEMORY_SIZE);
        assert!(QUEUES + u64::from(MAX_DEVICES + 2) * 0x4000 <= WRITE_BUF);
        assert!(RNG_BUF >= end && RNG_BUF + u64::from(RNG_LEN) <= super::super::GUEST_MEMORY_SIZE);
        assert_eq!(pattern(1), 0x9e37_79b9 ^ 0x5a5a_0000);
    }
}
