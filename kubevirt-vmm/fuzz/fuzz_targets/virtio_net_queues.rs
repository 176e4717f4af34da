//! libFuzzer target over virtio-net's queue handling (`NetQueues`): the input becomes both
//! queues' descriptor tables and available rings and every buffer, in 256 KiB of guest memory,
//! plus the frames the backend offers the receive path. Transmit and receive processing must
//! not panic or hang, must hand the backend only frames between `VNET_HDR_LEN` and
//! `MAX_FRAME_LEN` bytes with a clean header, and must not deliver more frames than the
//! backend offered. As in `virtio_blk_queue`, descriptor addresses and lengths without their
//! top bit set are folded into (or just past) guest memory; with it set they are used raw.
//!
//! Layout of the input: byte 0 = number of frames offered (low 3 bits) and whether transmit
//! runs first (bit 7); bytes 1-2 = the frames' length (u16 LE, runts included); the rest fills
//! memory from 0x1000: receive queue descriptors at 0x1000, its available ring at 0x1100,
//! transmit descriptors at 0x1200, its available ring at 0x1300.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-vmm/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_net_queues -- -max_total_time=60`

#![no_main]

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use kubevirt_vmm::virtio::HealthFlag;
use kubevirt_vmm::virtio::net::queues::NetQueues;
use kubevirt_vmm::virtio::net::{MAX_FRAME_LEN, NetBackend, NetCounters, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

mod guest;
use guest::NoInterrupt;

const RX_DESC: u64 = 0x1000;
const TX_DESC: u64 = 0x1200;

/// Offers `frames` frames of `len` bytes, then would block; checks what the device sends.
struct Backend {
    frames: u32,
    len: usize,
}

impl NetBackend for Backend {
    fn rx_fd(&self) -> RawFd {
        -1
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.frames == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.frames -= 1;
        let n = self.len.min(buf.len());
        buf[..n].fill(0x5a);
        Ok(n)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        assert!(
            (VNET_HDR_LEN..=MAX_FRAME_LEN).contains(&frame.len()),
            "sent a {}-byte frame",
            frame.len()
        );
        assert!(
            frame[..VNET_HDR_LEN].iter().all(|&b| b == 0),
            "header not cleaned"
        );
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let offered = u32::from(data[0] & 7);
    let tx_first = data[0] & 0x80 != 0;
    let len = usize::from(u16::from_le_bytes([data[1], data[2]]));
    let mem = guest::guest_memory(&data[3..], &[RX_DESC, TX_DESC], 0x1_2000);
    let backend: Box<dyn NetBackend> = Box::new(Backend {
        frames: offered,
        len,
    });
    let counters = Arc::new(NetCounters::default());
    let mut q = NetQueues::new(
        mem,
        guest::ready_queue(RX_DESC, RX_DESC + 0x100, 0x3000),
        guest::ready_queue(TX_DESC, TX_DESC + 0x100, 0x3100),
        Arc::new(Mutex::new(backend)),
        Arc::new(NoInterrupt),
        HealthFlag::default(),
        counters.clone(),
    );
    if tx_first {
        let _ = q.process_tx();
    }
    let _ = q.process_rx();
    let _ = q.process_rx();
    if !tx_first {
        let _ = q.process_tx();
    }
    let delivered = counters.rx_frames.load(Ordering::Relaxed);
    let dropped = counters.rx_dropped.load(Ordering::Relaxed);
    assert!(
        delivered + dropped <= u64::from(offered),
        "{delivered} delivered + {dropped} dropped of {offered} offered"
    );
});
