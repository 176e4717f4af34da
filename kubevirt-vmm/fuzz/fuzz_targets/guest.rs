//! What the virtqueue fuzz targets share: guest memory filled from the input with the
//! fuzzer's descriptor tables folded into range, a ready split queue, and an interrupt sink.
//!
//! Descriptor addresses and lengths without their top bit set are folded into (or just past)
//! guest memory so most inputs reach the device's parser; with it set they are used raw (far
//! out of range, huge).

#![allow(dead_code)] // each target uses a different part

use kubevirt_vmm::virtio::{VirtioInterrupt, VirtioInterruptType};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use kubevirt_vmm::GuestMemoryMmap;

/// Guest memory size.
pub const MEM: usize = 0x4_0000;
/// Queue entries.
pub const SIZE: u16 = 16;
/// Where the input's body starts in guest memory.
pub const BODY: u64 = 0x1000;

/// Guest memory with `body` copied from [`BODY`], and the [`SIZE`]-entry descriptor tables at
/// `tables` folded: addresses into `[0, MEM + 16 KiB)`, lengths below `max_len`.
pub fn guest_memory(body: &[u8], tables: &[u64], max_len: u32) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)])
        .expect("256 KiB of anonymous guest memory");
    let n = body.len().min(MEM - BODY as usize);
    mem.write_slice(&body[..n], GuestAddress(BODY))
        .expect("the body fits guest memory");
    for &table in tables {
        for i in 0..u64::from(SIZE) {
            let at = GuestAddress(table + 16 * i);
            let addr: u64 = mem.read_obj(at).expect("tables are inside guest memory");
            if addr >> 63 == 0 {
                mem.write_obj(addr % (MEM as u64 + 0x4000), at)
                    .expect("tables are inside guest memory");
            }
            let len_at = GuestAddress(table + 8 + 16 * i);
            let len: u32 = mem
                .read_obj(len_at)
                .expect("tables are inside guest memory");
            if len >> 31 == 0 {
                mem.write_obj(len % max_len, len_at)
                    .expect("tables are inside guest memory");
            }
        }
    }
    mem
}

/// A ready [`SIZE`]-entry queue with its descriptor table, available and used rings there.
pub fn ready_queue(desc: u64, avail: u64, used: u64) -> Queue {
    let mut q = Queue::new(SIZE).expect("a power-of-two queue size");
    q.try_set_desc_table_address(GuestAddress(desc))
        .expect("an aligned descriptor table");
    q.try_set_avail_ring_address(GuestAddress(avail))
        .expect("an aligned available ring");
    q.try_set_used_ring_address(GuestAddress(used))
        .expect("an aligned used ring");
    q.set_ready(true);
    q
}

/// Interrupts go nowhere: the targets look at memory and counters.
pub struct NoInterrupt;

impl VirtioInterrupt for NoInterrupt {
    fn trigger(&self, _: VirtioInterruptType) -> std::io::Result<()> {
        Ok(())
    }
}
