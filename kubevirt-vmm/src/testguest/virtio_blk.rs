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
    CodeAssembler, al, dword_ptr, eax, ecx, esi, ptr, qword_ptr, r8, r9, r11, r12, r12d, r13d, r15,
    rax, rbp, rcx, rdi, rsi, word_ptr,
};

use super::virtio_pci::{
    self, PciRoutines, VIRTIO_BLK_PCI_ID, VIRTIO_CONSOLE_PCI_ID, VIRTIO_RNG_PCI_ID,
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
/// Scratch: 0 while driving a disk, 1 the rng, 2 the console.
const KIND_ADDR: u64 = RESULTS + 0xf08;

/// Dword `i` of the pattern the driver writes.
pub fn pattern(i: u32) -> u32 {
    i.wrapping_mul(0x9e37_79b9) ^ 0x5a5a_0000
}

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
        let pci = PciRoutines::new(a);
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
        a.call(pci.cfg_read)?;
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
        a.set_label(&mut not_blk)?;
        // A virtio-rng (device index 2) and a virtio-console (3): each driven once.
        for (pci_id, found, kind, index) in [
            (VIRTIO_RNG_PCI_ID, RES_RNG_FOUND, 1u32, 2u32),
            (VIRTIO_CONSOLE_PCI_ID, RES_CONSOLE_FOUND, 2, 3),
        ] {
            let last = pci_id == VIRTIO_CONSOLE_PCI_ID;
            let mut other = a.create_label();
            a.cmp(eax, pci_id)?;
            a.jne(if last { next_slot } else { other })?;
            a.mov(rax, RESULTS + found)?;
            a.cmp(dword_ptr(rax), 0)?;
            a.jne(next_slot)?;
            a.mov(dword_ptr(rax), 1u32)?;
            a.mov(rax, KIND_ADDR)?;
            a.mov(dword_ptr(rax), kind)?;
            a.push(r12)?;
            a.mov(r12d, index)?;
            a.call(drive)?;
            a.pop(r12)?;
            a.jmp(next_slot)?;
            if !last {
                a.set_label(&mut other)?;
            }
        }
        a.set_label(&mut next_slot)?;
        a.inc(r13d)?;
        a.cmp(r13d, 32)?;
        a.jb(scan)?;
        a.mov(rax, RESULTS + RES_FOUND)?;
        a.mov(dword_ptr(rax), r12d)?;
        Ok::<_, iced_x86::IcedError>((pci, drive))
    })();
    let (pci, mut drive) = g.check(r)?;
    g.exit(0)?;

    let r = (|| {
        let a = g.a();
        pci.emit(a)?;

        // drive: device index R12, slot R13.
        a.set_label(&mut drive)?;
        a.mov(r15, r12)?;
        a.shl(r15, 8)?;
        a.mov(rax, RESULTS)?;
        a.add(r15, rax)?;
        a.mov(dword_ptr(r15 + RES_SLOT as i32), r13d)?;
        // The regions, wherever the capabilities put them; RSI = common configuration.
        a.call(pci.regions)?;
        a.mov(rsi, r8)?;
        virtio_pci::reset(a)?;
        virtio_pci::store_device_features(a, RES_FEATURES)?;
        a.and(eax, OFFERED_LOW as i32)?;
        // The rng acknowledges no device-specific feature.
        a.mov(rcx, KIND_ADDR)?;
        let mut keep = a.create_label();
        a.cmp(dword_ptr(rcx), 0)?;
        a.je(keep)?;
        a.xor(eax, eax)?;
        a.set_label(&mut keep)?;
        virtio_pci::accept_features(a)?;
        a.mov(dword_ptr(r15 + RES_STATUS as i32), eax)?;
        let mut give_up = a.create_label();
        a.test(al, 8)?;
        a.jz(give_up)?;

        // Queue 0 at RBP = QUEUES + k * 0x4000.
        a.mov(rbp, r12)?;
        a.shl(rbp, 14)?;
        a.mov(rax, QUEUES)?;
        a.add(rbp, rax)?;
        // The console also needs queue 1 (transmit): tables at +0x800, notify address in R8.
        let mut one_queue = a.create_label();
        a.mov(rax, KIND_ADDR)?;
        a.cmp(dword_ptr(rax), 2)?;
        a.jne(one_queue)?;
        virtio_pci::setup_queue(a, 1, QUEUE_SIZE, rbp, 0x800, r8)?;
        a.set_label(&mut one_queue)?;
        virtio_pci::setup_queue(a, 0, QUEUE_SIZE, rbp, 0, r9)?;
        virtio_pci::driver_ok(a)?;
        let mut rng = a.create_label();
        let mut console = a.create_label();
        a.mov(rax, KIND_ADDR)?;
        a.cmp(dword_ptr(rax), 1)?;
        a.je(rng)?;
        a.cmp(dword_ptr(rax), 2)?;
        a.je(console)?;
        // Capacity (8-byte read of the device configuration).
        a.mov(rax, qword_ptr(r11))?;
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
            virtio_pci::kick_and_wait(a, rbp, 0, r9, 0, (first + 2) as u32)?;
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
        virtio_pci::kick_and_wait(a, rbp, 0, r9, 0, 1)?;
        a.mov(eax, dword_ptr(rbp + 0x2008))?;
        a.mov(dword_ptr(r15 + RES_RNG_USED_LEN as i32), eax)?;
        a.ret()?;

        // The console: CONSOLE_TEXT in one buffer on the transmit queue, notify, poll.
        let mut text = a.create_label();
        a.set_label(&mut console)?;
        a.lea(rax, ptr(text))?;
        desc(a, 0x80, At::Rax, CONSOLE_TEXT.len() as u32, 0, 0)?;
        a.mov(word_ptr(rbp + 0x1804), 0u32)?;
        virtio_pci::kick_and_wait(a, rbp, 0x800, r8, 1, 1)?;
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
