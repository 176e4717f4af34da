//! A polling virtio-net driver running at CPL 3: the in-guest proof for virtio-net.
//!
//! [`virtio_net_check`] scans bus 0 through ports 0xCF8/0xCFC for the first virtio-net
//! function (vendor 0x1af4, device 0x1041), walks its capabilities, resets it, negotiates
//! VERSION_1 plus whichever of MAC and STATUS is offered, sets up the receive queue (0) and
//! the transmit queue (1) with [`QUEUE_SIZE`] entries, and reads the MAC address and link
//! status from the device configuration. It then offers [`RX_BUFFERS`] receive buffers of
//! [`RX_BUF_LEN`] bytes, sends one broadcast frame ([`ETHERTYPE`], [`GUEST_PAYLOAD`], source =
//! its MAC) behind a zero 12-byte `virtio_net_hdr`, waits for the transmit queue to return
//! it, and polls the used ring of the receive queue for a frame of type [`ETHERTYPE`]
//! (frames of other types are skipped). No interrupts.
//!
//! Results land at [`RESULTS`] (the `RES_*` offsets). Exit codes: 0 = a frame of type
//! [`ETHERTYPE`] arrived; 1 = no virtio-net function; 2 = `FEATURES_OK` refused; 3 = no such
//! frame within about [`RX_POLL_LIMIT`] polls or before every receive buffer was used.

use iced_x86::code_asm::{
    al, byte_ptr, dword_ptr, dx, eax, ecx, edx, esi, ptr, qword_ptr, r8, r11, r11d, r12, r13d, r15,
    rax, rbx, rdi, rdx, rsi, word_ptr,
};

use super::virtio_pci::{self, PciRoutines, VIRTIO_NET_PCI_ID};
use super::{GUEST_DATA_ADDR, GuestAsm, TestGuest, TestGuestError};

/// Where results go.
pub const RESULTS: u64 = GUEST_DATA_ADDR;
/// 1 if a virtio-net function was found (u32).
pub const RES_FOUND: u64 = 0x00;
/// Its PCI slot (u32).
pub const RES_SLOT: u64 = 0x04;
/// Device features as read (u64).
pub const RES_FEATURES: u64 = 0x08;
/// Device status read back after setting `FEATURES_OK` (u32).
pub const RES_STATUS: u64 = 0x10;
/// The `status` field of the device configuration (u16; 1 = link up).
pub const RES_LINK: u64 = 0x14;
/// The MAC address from the device configuration (6 bytes).
pub const RES_MAC: u64 = 0x18;
/// The transmit queue's used index at the end (u32).
pub const RES_TX_USED: u64 = 0x20;
/// The receive queue's used index at the end (u32).
pub const RES_RX_USED: u64 = 0x24;
/// The descriptor (= buffer index) the matching frame arrived in (u32).
pub const RES_RX_ID: u64 = 0x28;
/// Its used length: header plus frame (u32).
pub const RES_RX_LEN: u64 = 0x2c;

/// Queue memory: receive descriptors, avail ring (+0x1000), used ring (+0x2000); the transmit
/// queue the same at +0x4000.
pub const QUEUES: u64 = 0x30_0000;
/// Receive buffer *i* is at `RX_BUFS + i * RX_BUF_LEN`.
pub const RX_BUFS: u64 = 0x31_0000;
/// Bytes per receive buffer (the spec asks for at least 1526 without offloads).
pub const RX_BUF_LEN: u32 = 0x800;
/// Receive buffers offered.
pub const RX_BUFFERS: u16 = 8;
/// Where the transmitted header and frame are built.
pub const TX_BUF: u64 = 0x32_0000;
/// Queue entries the driver uses.
pub const QUEUE_SIZE: u16 = 16;
/// The EtherType of the frames exchanged (IEEE 802 local experimental).
pub const ETHERTYPE: u16 = 0x88b5;
/// The payload of the guest's frame.
pub const GUEST_PAYLOAD: &[u8] = b"kubevirt-vmm virtio-net: hello from the guest";
/// Bytes of the guest's frame after the header: Ethernet header plus payload, padded to
/// Ethernet's 60-byte minimum.
pub const GUEST_FRAME_LEN: u32 = 60;
/// Polls of the receive used ring before giving up (a `pause` each: seconds).
pub const RX_POLL_LIMIT: u32 = 1 << 28;

const F_WRITE: u32 = 2;
const ACCEPTED_LOW: u32 = (1 << 5) | (1 << 16);
const _: () = assert!(14 + GUEST_PAYLOAD.len() as u32 <= GUEST_FRAME_LEN);
const _: () = assert!(QUEUES + 0x7000 <= RX_BUFS);
const _: () = assert!(RX_BUFS + RX_BUFFERS as u64 * RX_BUF_LEN as u64 <= TX_BUF);
const _: () = assert!(TX_BUF + 0x1000 <= super::GUEST_MEMORY_SIZE);

/// The frame (after the header) the guest sends, given the MAC it read.
pub fn guest_frame(mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(GUEST_PAYLOAD);
    f.resize(GUEST_FRAME_LEN as usize, 0);
    f
}

/// Assembles the driver.
pub fn virtio_net_check() -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("virtio_net_check")?;
    let r = (|| {
        let a = g.a();
        let pci = PciRoutines::new(a);
        let mut text = a.create_label();
        let mut not_found = a.create_label();
        let mut refused = a.create_label();
        let mut timeout = a.create_label();
        let mut exit = a.create_label();
        a.mov(r15, RESULTS)?;

        // The first virtio-net function on bus 0: slot in R13.
        virtio_pci::find_function(a, &pci, VIRTIO_NET_PCI_ID, not_found)?;
        a.mov(dword_ptr(r15 + RES_FOUND as i32), 1u32)?;
        a.mov(dword_ptr(r15 + RES_SLOT as i32), r13d)?;

        // The regions, wherever the capabilities put them. RSI = common configuration:
        // reset, ACKNOWLEDGE, DRIVER, features.
        a.call(pci.regions)?;
        a.mov(rsi, r8)?;
        virtio_pci::reset(a)?;
        virtio_pci::store_device_features(a, RES_FEATURES)?;
        a.and(eax, ACCEPTED_LOW as i32)?;
        virtio_pci::accept_features(a)?;
        a.mov(dword_ptr(r15 + RES_STATUS as i32), eax)?;
        a.test(al, 8)?;
        a.jz(refused)?;

        // Queues: RBX = receive notify address, R12 = transmit notify address.
        a.mov(rdi, QUEUES)?;
        virtio_pci::setup_queue(a, 0, QUEUE_SIZE, rdi, 0, rbx)?;
        virtio_pci::setup_queue(a, 1, QUEUE_SIZE, rdi, 0x4000, r12)?;
        virtio_pci::driver_ok(a)?;

        // MAC (byte reads, as a driver does) and link status.
        a.mov(rdi, r11)?;
        for i in 0..6 {
            a.mov(al, byte_ptr(rdi + i))?;
            a.mov(byte_ptr(r15 + (RES_MAC as i32 + i)), al)?;
        }
        a.movzx(eax, word_ptr(rdi + 6))?;
        a.mov(word_ptr(r15 + RES_LINK as i32), eax)?;

        // Receive buffers: descriptor i -> RX_BUFS + i * RX_BUF_LEN, device-writable.
        a.mov(rdi, QUEUES)?;
        for i in 0..i32::from(RX_BUFFERS) {
            a.mov(rax, RX_BUFS + i as u64 * u64::from(RX_BUF_LEN))?;
            a.mov(qword_ptr(rdi + 16 * i), rax)?;
            a.mov(dword_ptr(rdi + (16 * i + 8)), RX_BUF_LEN)?;
            a.mov(word_ptr(rdi + (16 * i + 12)), F_WRITE)?;
            a.mov(word_ptr(rdi + (16 * i + 14)), 0u32)?;
            a.mov(word_ptr(rdi + (0x1004 + 2 * i)), i as u32)?;
        }
        a.mov(word_ptr(rdi + 0x1002), u32::from(RX_BUFFERS))?;
        a.mfence()?;
        a.mov(word_ptr(rbx), 0u32)?;

        // The frame: zero header, broadcast destination, our MAC, EtherType, payload.
        a.mov(rdi, TX_BUF)?;
        a.mov(qword_ptr(rdi), 0)?;
        a.mov(dword_ptr(rdi + 8), 0u32)?;
        a.mov(dword_ptr(rdi + 12), 0xffff_ffffu32)?;
        a.mov(word_ptr(rdi + 16), 0xffffu32)?;
        for i in 0..6 {
            a.mov(al, byte_ptr(r15 + (RES_MAC as i32 + i)))?;
            a.mov(byte_ptr(rdi + (18 + i)), al)?;
        }
        a.mov(word_ptr(rdi + 24), u32::from(ETHERTYPE.swap_bytes()))?;
        a.lea(rsi, ptr(text))?;
        a.lea(rdi, ptr(rdi + 26))?;
        a.mov(ecx, GUEST_FRAME_LEN - 14)?;
        a.rep().movsb()?;
        // One descriptor, readable; notify the transmit queue; wait for it to come back.
        a.mov(rdi, QUEUES + 0x4000)?;
        a.mov(rax, TX_BUF)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.mov(dword_ptr(rdi + 8), 12 + GUEST_FRAME_LEN)?;
        a.mov(dword_ptr(rdi + 12), 0u32)?;
        a.mov(word_ptr(rdi + 0x1004), 0u32)?;
        virtio_pci::kick_and_wait(a, rdi, 0, r12, 1, 1)?;
        a.mov(dword_ptr(r15 + RES_TX_USED as i32), eax)?;

        // Receive: R11 = next used entry to look at, ECX counts polls down.
        a.xor(r11d, r11d)?;
        a.mov(ecx, RX_POLL_LIMIT)?;
        a.mov(rdi, QUEUES)?;
        let mut rx_poll = a.create_label();
        let mut have = a.create_label();
        a.set_label(&mut rx_poll)?;
        a.movzx(eax, word_ptr(rdi + 0x2002))?;
        a.mov(dword_ptr(r15 + RES_RX_USED as i32), eax)?;
        a.cmp(eax, r11d)?;
        a.ja(have)?;
        a.pause()?;
        a.dec(ecx)?;
        a.jnz(rx_poll)?;
        a.jmp(timeout)?;
        a.set_label(&mut have)?;
        // Used entry R11 % QUEUE_SIZE: id at +4, len at +8.
        a.mov(eax, r11d)?;
        a.and(eax, u32::from(QUEUE_SIZE - 1))?;
        a.mov(edx, dword_ptr(rdi + rax * 8 + 0x2004))?;
        a.mov(esi, dword_ptr(rdi + rax * 8 + 0x2008))?;
        a.inc(r11d)?;
        // The buffer: RX_BUFS + id * RX_BUF_LEN; its EtherType is at 12 + 12.
        a.cmp(edx, u32::from(RX_BUFFERS))?;
        a.jae(timeout)?;
        a.mov(rax, rdx)?;
        a.shl(rax, RX_BUF_LEN.trailing_zeros())?;
        a.mov(r8, RX_BUFS)?;
        a.add(rax, r8)?;
        a.movzx(eax, word_ptr(rax + 24))?;
        a.cmp(eax, u32::from(ETHERTYPE.swap_bytes()))?;
        let mut matched = a.create_label();
        a.je(matched)?;
        a.cmp(r11d, u32::from(RX_BUFFERS))?;
        a.jb(rx_poll)?;
        a.jmp(timeout)?;
        a.set_label(&mut matched)?;
        a.mov(dword_ptr(r15 + RES_RX_ID as i32), edx)?;
        a.mov(dword_ptr(r15 + RES_RX_LEN as i32), esi)?;
        a.xor(eax, eax)?;
        a.jmp(exit)?;

        a.set_label(&mut not_found)?;
        a.mov(eax, 1u32)?;
        a.jmp(exit)?;
        a.set_label(&mut refused)?;
        a.mov(eax, 2u32)?;
        a.jmp(exit)?;
        a.set_label(&mut timeout)?;
        a.mov(eax, 3u32)?;
        // exit: the debug-exit port gets AL.
        a.set_label(&mut exit)?;
        a.mov(dx, u32::from(super::DEBUG_EXIT_PORT))?;
        a.out(dx, al)?;
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.pause()?;
        a.jmp(spin)?;

        pci.emit(a)?;

        let mut payload = GUEST_PAYLOAD.to_vec();
        payload.resize(GUEST_FRAME_LEN as usize - 14, 0);
        a.set_label(&mut text)?;
        a.db(&payload)
    })();
    g.check(r)?;
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_assembles_and_its_buffers_fit_the_test_guest_memory() {
        let g = virtio_net_check().unwrap();
        assert!(!g.code.is_empty());
        let f = guest_frame([2, 0, 0, 0, 0, 1]);
        assert_eq!(f.len(), GUEST_FRAME_LEN as usize);
        assert_eq!(&f[12..14], &[0x88, 0xb5]);
    }
}
