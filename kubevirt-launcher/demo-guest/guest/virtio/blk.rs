//! virtio-blk: capacity, serial, and synchronous reads.

use super::queue::{Buf, Queue};
use super::{F_VERSION_1, Transport};
use crate::dma::Arena;
use crate::hw::mmio::{self, r8, r64};

const F_RO: u64 = 1 << 5;
const T_IN: u32 = 0;
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
    queue: Queue,
    /// Request header (16 bytes), then the status byte.
    header: u64,
    data: u64,
}

impl Disk {
    /// Sets up the disk behind `t`.
    pub fn probe(slot: u8, t: &Transport, arena: &mut Arena) -> Option<Disk> {
        let features = t.negotiate(F_RO | F_VERSION_1)?;
        let queue = t.queue(0, arena)?;
        t.driver_ok();
        let mut d = Disk {
            slot,
            sectors: r64(t.device),
            read_only: features & F_RO != 0,
            serial: [0; SERIAL_LEN],
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
                device_writes: true,
            },
            Buf {
                addr: self.header + 16,
                len: 1,
                device_writes: true,
            },
        ];
        self.queue.run(&chain).is_some() && r8(self.header + 16) == 0
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
