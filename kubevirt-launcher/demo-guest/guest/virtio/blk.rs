//! virtio-blk: capacity, serial, and synchronous reads.

use super::queue::{Buf, Queue};
use super::{F_VERSION_1, Transport};
use crate::dma::Arena;
use crate::hw::mmio::{self, r8, r64};

const F_RO: u64 = 1 << 5;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const F_FLUSH: u64 = 1 << 9;
const T_GET_ID: u32 = 8;
const SERIAL_LEN: usize = 20;
/// The largest read [`Disk::read`] does at once.
pub const MAX_READ: usize = 4096;

/// One virtio-blk disk.
pub struct Disk {
    /// PCI slot.
    pub slot: u8,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// The device refuses writes.
    pub read_only: bool,
    /// `GET_ID`'s answer (upstream's disk `serial`), NUL-padded.
    pub serial: [u8; SERIAL_LEN],
    /// The device takes flush requests.
    flush: bool,
    queue: Queue,
    /// Request header (16 bytes), then the status byte.
    header: u64,
    data: u64,
}

impl Disk {
    /// Sets up the disk behind `t`.
    pub fn probe(slot: u8, t: &Transport, arena: &mut Arena) -> Option<Disk> {
        let features = t.negotiate(F_RO | F_FLUSH | F_VERSION_1)?;
        let queue = t.queue(0, arena, super::NO_VECTOR)?;
        t.driver_ok();
        let mut d = Disk {
            slot,
            sectors: r64(t.device),
            read_only: features & F_RO != 0,
            serial: [0; SERIAL_LEN],
            flush: features & F_FLUSH != 0,
            queue,
            header: arena.alloc(32, 16)?,
            data: arena.alloc(MAX_READ as u64, 4096)?,
        };
        if d.request(T_GET_ID, 0, SERIAL_LEN as u32) {
            // SAFETY: the device finished with the data buffer.
            d.serial
                .copy_from_slice(&unsafe { mmio::bytes(d.data, SERIAL_LEN) }[..]);
        }
        Some(d)
    }

    fn request(&mut self, kind: u32, sector: u64, len: u32) -> bool {
        let device_writes = kind != T_OUT;
        mmio::w32(self.header, kind);
        mmio::w32(self.header + 4, 0);
        mmio::w64(self.header + 8, sector);
        mmio::w8(self.header + 16, 0xff);
        let chain = [
            Buf {
                addr: self.header,
                len: 16,
                device_writes: false,
            },
            Buf {
                addr: self.data,
                len,
                device_writes,
            },
            Buf {
                addr: self.header + 16,
                len: 1,
                device_writes: true,
            },
        ];
        // A flush carries no data buffer.
        let chain: &[Buf] = if len == 0 {
            &[chain[0], chain[2]]
        } else {
            &chain
        };
        self.queue.run(chain).is_some() && r8(self.header + 16) == 0
    }

    /// Reads `out.len()` (≤ [`MAX_READ`], a multiple of 512) bytes from `sector`.
    pub fn read(&mut self, sector: u64, out: &mut [u8]) -> bool {
        if out.len() > MAX_READ || !self.request(T_IN, sector, out.len() as u32) {
            return false;
        }
        // SAFETY: the device finished with the data buffer.
        out.copy_from_slice(&unsafe { mmio::bytes(self.data, out.len()) }[..]);
        true
    }

    /// Writes `data` (≤ [`MAX_READ`], a multiple of 512) at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> bool {
        if data.len() > MAX_READ || self.read_only {
            return false;
        }
        // SAFETY: the data buffer is ours while no request is in flight.
        unsafe { mmio::bytes(self.data, data.len()) }.copy_from_slice(data);
        self.request(T_OUT, sector, data.len() as u32)
    }

    /// Makes the disk's writes durable (when the device has a write cache to flush).
    pub fn flush(&mut self) -> bool {
        !self.flush || self.request(T_FLUSH, 0, 0)
    }

    /// The serial without its padding.
    pub fn serial(&self) -> &[u8] {
        let n = self
            .serial
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SERIAL_LEN);
        &self.serial[..n]
    }
}
