//! libFuzzer target over the virtio-blk request queue: the input becomes the descriptor
//! table (at 0x1000), the available ring (0x1100) and the request buffers (0x1200 on) of a
//! 16-entry queue in 256 KiB of guest memory; processing must not panic, hang or write the
//! disk out of bounds. Descriptor addresses and lengths without their top bit set are folded
//! into (or just past) guest memory so most inputs reach the request parser; with it set they
//! are used raw (far out of range, huge).
//!
//! Run: `scripts/fuzz.sh` (CI: 30 s from the committed corpus), or by hand
//! `cd kubevirt-vmm/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_blk_queue -- -max_total_time=60`

#![no_main]

use std::sync::{Arc, Mutex};

use kubevirt_vmm::virtio::block::BlockBackend;
use kubevirt_vmm::virtio::block::queue::BlockQueue;
use kubevirt_vmm::virtio::{HealthFlag, VirtioInterrupt, VirtioInterruptType};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM: usize = 0x4_0000;
const SIZE: u16 = 16;

struct Disk(Vec<u8>, bool);

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

struct NoInterrupt;
impl VirtioInterrupt for NoInterrupt {
    fn trigger(&self, _: VirtioInterruptType) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    // Byte 0: read-only flag; the rest fills memory from 0x1000, so the fuzzer controls the
    // descriptor table, the avail ring and every buffer.
    let read_only = data[0] & 1 == 1;
    let body = &data[1..];
    let n = body.len().min(MEM - 0x1000);
    mem.write_slice(&body[..n], GuestAddress(0x1000)).unwrap();
    for i in 0..u64::from(SIZE) {
        let at = GuestAddress(0x1000 + 16 * i);
        let addr: u64 = mem.read_obj(at).unwrap();
        if addr >> 63 == 0 {
            mem.write_obj(addr % (MEM as u64 + 0x4000), at).unwrap();
        }
        let len_at = GuestAddress(0x1008 + 16 * i);
        let len: u32 = mem.read_obj(len_at).unwrap();
        if len >> 31 == 0 {
            mem.write_obj(len % 0x4000, len_at).unwrap();
        }
    }
    let mut queue = Queue::new(SIZE).unwrap();
    queue
        .try_set_desc_table_address(GuestAddress(0x1000))
        .unwrap();
    queue
        .try_set_avail_ring_address(GuestAddress(0x1100))
        .unwrap();
    queue
        .try_set_used_ring_address(GuestAddress(0x3000))
        .unwrap();
    queue.set_ready(true);
    let disk: Arc<Mutex<Box<dyn BlockBackend>>> =
        Arc::new(Mutex::new(Box::new(Disk(vec![0xa5; 16 << 10], read_only))));
    let mut q = BlockQueue::new(
        mem,
        queue,
        disk.clone(),
        *b"fuzz-serial-01234567",
        Arc::new(NoInterrupt),
        HealthFlag::default(),
    );
    let _ = q.process();
    assert_eq!(disk.lock().unwrap().size(), 16 << 10);
});
