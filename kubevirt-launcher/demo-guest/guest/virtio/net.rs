//! virtio-net: receive buffers kept posted (their queue interrupts when it can), one transmit
//! at a time.

use super::queue::{Buf, Queue};
use super::{F_VERSION_1, Transport};
use crate::dma::Arena;
use crate::hw::mmio::{self, r8};

const F_MAC: u64 = 1 << 5;
/// `struct virtio_net_hdr` with `num_buffers` (VERSION_1), all zero: no offloads.
const HEADER: usize = 12;
const BUFFER: usize = 2048;
/// The largest frame sent or received.
pub const MAX_FRAME: usize = BUFFER - HEADER;

/// One virtio-net interface.
pub struct Nic {
    /// PCI slot.
    pub slot: u8,
    /// The MAC the device was given (or a fixed one if it has none).
    pub mac: [u8; 6],
    /// Whether a received frame raises an interrupt (MSI-X); without, the guest polls.
    pub interrupts: bool,
    rx: Queue,
    tx: Queue,
    rx_buffers: u64,
    tx_buffer: u64,
}

impl Nic {
    /// Sets up the interface behind `t` and posts every receive buffer.
    pub fn probe(slot: u8, t: &Transport, arena: &mut Arena) -> Option<Nic> {
        let features = t.negotiate(F_MAC | F_VERSION_1)?;
        // The receive queue wakes the guest; transmits are waited for by polling.
        let irq = crate::hw::irq::enabled()
            && t.msix_route(0, crate::hw::irq::VECTOR_NET, crate::hw::irq::apic_id());
        let rx = t.queue(0, arena, if irq { 0 } else { super::NO_VECTOR })?;
        let irq = irq && t.queue_vector(0) == 0;
        let tx = t.queue(1, arena, super::NO_VECTOR)?;
        let mut mac = [0x02, 0, 0, 0, 0, 1];
        if features & F_MAC != 0 {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = r8(t.device + i as u64);
            }
        }
        let rx_buffers = arena.alloc(u64::from(rx.size()) * BUFFER as u64, 4096)?;
        let tx_buffer = arena.alloc(BUFFER as u64, 4096)?;
        let mut nic = Nic {
            slot,
            mac,
            interrupts: irq,
            rx,
            tx,
            rx_buffers,
            tx_buffer,
        };
        for i in 0..nic.rx.size() {
            nic.post(i);
        }
        t.driver_ok();
        nic.rx.notify();
        Some(nic)
    }

    fn post(&mut self, i: u16) {
        let b = Buf {
            addr: self.rx_buffers + u64::from(i) * BUFFER as u64,
            len: BUFFER as u32,
            device_writes: true,
        };
        self.rx.set_chain(i, &[b]);
        self.rx.push(i);
    }

    /// Copies the next received frame into `out`; returns its length.
    pub fn receive(&mut self, out: &mut [u8; MAX_FRAME]) -> Option<usize> {
        let (head, len) = self.rx.pop_used()?;
        let head = head % self.rx.size();
        let n = (len as usize).saturating_sub(HEADER).min(MAX_FRAME);
        let at = self.rx_buffers + u64::from(head) * BUFFER as u64 + HEADER as u64;
        // SAFETY: the device returned this buffer; it is ours until posted again.
        out[..n].copy_from_slice(&unsafe { mmio::bytes(at, n) }[..]);
        self.post(head);
        self.rx.notify();
        Some(n)
    }

    /// Sends `frame` and waits for the device to take it.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        let n = frame.len().min(MAX_FRAME);
        // SAFETY: the transmit buffer is ours between sends (each send waits for the device).
        let buf = unsafe { mmio::bytes(self.tx_buffer, HEADER + n) };
        buf[..HEADER].fill(0);
        buf[HEADER..].copy_from_slice(&frame[..n]);
        let chain = [Buf {
            addr: self.tx_buffer,
            len: (HEADER + n) as u32,
            device_writes: false,
        }];
        self.tx.run(&chain).is_some()
    }
}
