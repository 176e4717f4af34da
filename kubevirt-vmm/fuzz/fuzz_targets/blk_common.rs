//! What the virtio-blk fuzz targets share: the input -> guest memory mapping, an in-memory
//! disk that uses `BlockBackend`'s bounce-buffer defaults, and the queue set-up (over
//! `guest.rs`, which the virtio-net target shares).
//!
//! Input: byte 0 bit 0 = the disk is read-only; the rest fills guest memory from 0x1000, so
//! the fuzzer controls the descriptor table (0x1000), the available ring (0x1100) and every
//! buffer of a 16-entry queue in 256 KiB. Descriptor addresses and lengths without their top
//! bit set are folded into (or just past) guest memory so most inputs reach the request
//! parser; with it set they are used raw (far out of range, huge).

#![allow(dead_code)] // each target uses a different part

use std::sync::{Arc, Mutex};

use kubevirt_vmm::virtio::HealthFlag;
use kubevirt_vmm::virtio::block::BlockBackend;
use kubevirt_vmm::virtio::block::queue::BlockQueue;
use kubevirt_vmm::GuestMemoryMmap;

use crate::guest::{self, NoInterrupt};
/// Disk size; every byte starts as 0xa5.
pub const DISK_LEN: usize = 16 << 10;

/// An in-memory disk. Only the required methods are implemented, so requests go through the
/// trait's bounce-buffer `read_to_guest`/`write_from_guest`.
pub struct Disk(pub Vec<u8>, pub bool);

impl BlockBackend for Disk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_only(&self) -> bool {
        self.1
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        assert!(!self.1, "write reached a read-only disk");
        let o = offset as usize;
        self.0[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.0[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

/// A disk shared with the queue.
pub type SharedDisk = Arc<Mutex<Box<dyn BlockBackend>>>;

/// Guest memory built from `data`, and whether the disk is read-only; None for empty input.
pub fn guest_memory(data: &[u8]) -> Option<(GuestMemoryMmap, bool)> {
    let (&flags, body) = data.split_first()?;
    Some((guest::guest_memory(body, &[0x1000], 0x4000), flags & 1 == 1))
}

/// Processes every available request of the queue in `mem` against `disk`.
pub fn process(mem: GuestMemoryMmap, disk: SharedDisk) {
    let mut q = BlockQueue::new(
        mem,
        guest::ready_queue(0x1000, 0x1100, 0x3000),
        disk,
        *b"fuzz-serial-01234567",
        Arc::new(NoInterrupt),
        HealthFlag::default(),
    );
    let _ = q.process();
}
