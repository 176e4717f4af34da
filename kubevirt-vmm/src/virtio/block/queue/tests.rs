//! Queue processing against guest memory laid out by hand, and property tests that feed it
//! arbitrary descriptor tables and rings.

use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::VirtioInterruptType;
use crate::virtio::block::request::*;

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const DATA: u64 = 0x1_0000;
const MEM_SIZE: u64 = 0x10_0000;
const SIZE: u16 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// A disk in a `Vec`, counting flushes.
struct MemDisk {
    bytes: Vec<u8>,
    read_only: bool,
    flushes: Arc<AtomicU32>,
}

impl BlockBackend for MemDisk {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let o = offset as usize;
        buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        assert!(!self.read_only, "a write reached a read-only disk");
        let o = offset as usize;
        self.bytes[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.bytes[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

/// Records what the queue signals.
#[derive(Default)]
struct Signals(Mutex<Vec<VirtioInterruptType>>);

impl VirtioInterrupt for Signals {
    fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
        self.0.lock().unwrap().push(kind);
        Ok(())
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    q: BlockQueue,
    disk: SharedDisk,
    health: HealthFlag,
    flushes: Arc<AtomicU32>,
    signals: Arc<Signals>,
}

fn rig(disk_bytes: usize, read_only: bool) -> Rig {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
    let queue = crate::virtio::test_utils::ready_queue(SIZE, DESC, AVAIL, USED);
    assert!(queue.is_valid(&mem));
    let flushes = Arc::new(AtomicU32::new(0));
    let disk: SharedDisk = Arc::new(Mutex::new(Box::new(MemDisk {
        bytes: (0..disk_bytes).map(|i| (i / 512) as u8).collect(),
        read_only,
        flushes: flushes.clone(),
    })));
    let health = HealthFlag::default();
    let signals = Arc::new(Signals::default());
    let q = BlockQueue::new(
        mem.clone(),
        queue,
        disk.clone(),
        *b"serial-0123456789abc",
        signals.clone(),
        health.clone(),
    );
    Rig {
        mem,
        q,
        disk,
        health,
        flushes,
        signals,
    }
}

impl Rig {
    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.mem
            .write_obj(
                Descriptor::new(addr, len, flags, next),
                GuestAddress(DESC + 16 * u64::from(i)),
            )
            .unwrap();
    }

    /// Makes `heads` available (after what was made available before).
    fn offer(&self, heads: &[u16]) {
        let idx: u16 = self.mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
        for (k, &h) in heads.iter().enumerate() {
            let slot = (idx as usize + k) % SIZE as usize;
            self.mem
                .write_obj(h, GuestAddress(AVAIL + 4 + 2 * slot as u64))
                .unwrap();
        }
        self.mem
            .write_obj(
                idx.wrapping_add(heads.len() as u16),
                GuestAddress(AVAIL + 2),
            )
            .unwrap();
    }

    /// The used ring's (id, len) entries so far.
    fn used(&self) -> Vec<(u32, u32)> {
        let idx: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
        (0..idx)
            .map(|i| {
                let at = USED + 4 + 8 * u64::from(i % SIZE);
                (
                    self.mem.read_obj(GuestAddress(at)).unwrap(),
                    self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
                )
            })
            .collect()
    }

    /// A three-descriptor request at descriptors base..base+3: header, data, status.
    fn request(
        &self,
        base: u16,
        kind: u32,
        sector: u64,
        data_addr: u64,
        len: u32,
        data_writable: bool,
    ) {
        let hdr = DATA + 0x100 * u64::from(base);
        self.mem.write_obj(kind, GuestAddress(hdr)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
        self.desc(base, hdr, 16, F_NEXT, base + 1);
        self.desc(
            base + 1,
            data_addr,
            len,
            F_NEXT | if data_writable { F_WRITE } else { 0 },
            base + 2,
        );
        self.desc(base + 2, hdr + 0x20, 1, F_WRITE, 0);
        self.mem
            .write_obj(0xffu8, GuestAddress(hdr + 0x20))
            .unwrap();
    }

    fn status(&self, base: u16) -> u8 {
        self.mem
            .read_obj(GuestAddress(DATA + 0x100 * u64::from(base) + 0x20))
            .unwrap()
    }

    fn disk_bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut d = self.disk.lock().unwrap();
        let mut b = vec![0u8; len];
        d.read_at(&mut b, offset as u64).unwrap();
        b
    }
}

const BUF: u64 = 0x4_0000;

#[test]
fn write_flush_read_round_trip() {
    let mut r = rig(64 << 10, false);
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    r.mem.write_slice(&pattern, GuestAddress(BUF)).unwrap();
    r.request(0, VIRTIO_BLK_T_OUT, 3, BUF, 1024, false);
    r.request(3, VIRTIO_BLK_T_FLUSH, 0, BUF, 0, false);
    // A flush has no data descriptor: header -> status.
    r.desc(3, DATA + 0x300, 16, F_NEXT, 5);
    r.request(6, VIRTIO_BLK_T_IN, 3, BUF + 0x1000, 1024, true);
    r.offer(&[0, 3, 6]);
    assert_eq!(r.q.process().unwrap(), 3);
    assert_eq!(r.used(), vec![(0, 1), (3, 1), (6, 1025)]);
    assert_eq!(
        [r.status(0), r.status(3), r.status(6)],
        [VIRTIO_BLK_S_OK; 3]
    );
    assert_eq!(r.disk_bytes(3 * 512, 1024), pattern);
    assert_eq!(r.flushes.load(Ordering::Relaxed), 1);
    let mut back = vec![0u8; 1024];
    r.mem
        .read_slice(&mut back, GuestAddress(BUF + 0x1000))
        .unwrap();
    assert_eq!(back, pattern);
}

#[test]
fn read_only_disks_reject_writes_discards_and_zeroes() {
    let mut r = rig(8192, true);
    r.request(0, VIRTIO_BLK_T_OUT, 0, BUF, 512, false);
    r.request(3, VIRTIO_BLK_T_WRITE_ZEROES, 0, BUF, 16, false);
    r.request(6, VIRTIO_BLK_T_DISCARD, 0, BUF, 16, false);
    r.mem.write_obj([0u64, 1], GuestAddress(BUF)).unwrap();
    r.offer(&[0, 3, 6]);
    r.q.process().unwrap();
    assert_eq!(
        [r.status(0), r.status(3), r.status(6)],
        [VIRTIO_BLK_S_IOERR; 3]
    );
    assert_eq!(r.disk_bytes(0, 512), vec![0; 512]);
}

#[test]
fn get_id_discard_write_zeroes_and_unsupported_requests() {
    let mut r = rig(8192, false);
    r.request(0, VIRTIO_BLK_T_GET_ID, 0, BUF, 20, true);
    r.mem
        .write_obj([2u64, 3], GuestAddress(BUF + 0x100))
        .unwrap(); // sector 2, 3 sectors
    r.request(3, VIRTIO_BLK_T_WRITE_ZEROES, 0, BUF + 0x100, 16, false);
    r.mem
        .write_obj([14u64, 5], GuestAddress(BUF + 0x200))
        .unwrap(); // past the end
    r.request(6, VIRTIO_BLK_T_DISCARD, 0, BUF + 0x200, 16, false);
    r.request(9, 77, 0, BUF, 512, true);
    r.offer(&[0, 3, 6, 9]);
    r.q.process().unwrap();
    let mut id = [0u8; 20];
    r.mem.read_slice(&mut id, GuestAddress(BUF)).unwrap();
    assert_eq!(&id, b"serial-0123456789abc");
    assert_eq!(
        [r.status(0), r.status(3), r.status(6), r.status(9)],
        [
            VIRTIO_BLK_S_OK,
            VIRTIO_BLK_S_OK,
            VIRTIO_BLK_S_IOERR,
            VIRTIO_BLK_S_UNSUPP
        ]
    );
    assert_eq!(r.disk_bytes(512, 512), vec![1; 512]);
    assert_eq!(r.disk_bytes(1024, 1536), vec![0; 1536]);
    assert_eq!(r.disk_bytes(2560, 512), vec![5; 512]);
}

#[test]
fn out_of_range_and_partial_sector_requests_fail_without_touching_the_disk() {
    let mut r = rig(4096, false);
    r.request(0, VIRTIO_BLK_T_OUT, 7, BUF, 1024, false);
    r.request(3, VIRTIO_BLK_T_OUT, 0, BUF, 100, false);
    r.request(6, VIRTIO_BLK_T_IN, u64::MAX / 256, BUF, 512, true);
    r.offer(&[0, 3, 6]);
    r.q.process().unwrap();
    assert_eq!(
        [r.status(0), r.status(3), r.status(6)],
        [VIRTIO_BLK_S_IOERR; 3]
    );
    assert_eq!(
        r.disk_bytes(0, 4096),
        (0..4096).map(|i| (i / 512) as u8).collect::<Vec<_>>()
    );
}

#[test]
fn a_descriptor_loop_breaks_the_device_and_says_so() {
    let mut r = rig(4096, false);
    r.request(0, VIRTIO_BLK_T_GET_ID, 0, BUF, 20, true);
    r.request(3, VIRTIO_BLK_T_IN, 0, BUF, 512, true);
    r.desc(5, DATA + 0x320, 1, F_WRITE | F_NEXT, 4); // status -> data -> status -> ...
    r.offer(&[0, 3]);
    assert!(matches!(
        r.q.process(),
        Err(QueueError::Chain(ChainError::Truncated { head: 3, .. }))
    ));
    assert!(r.health.is_broken());
    // The request before it completed; the loop is not answered, the driver is told.
    assert_eq!(r.used(), vec![(0, 21)]);
    assert_eq!(r.status(3), 0xff);
    assert_eq!(
        *r.signals.0.lock().unwrap(),
        vec![VirtioInterruptType::Config]
    );
    r.offer(&[0]);
    assert_eq!(r.q.process().unwrap(), 0, "a broken device ignores the queue");
}

#[test]
fn buffers_outside_memory_break_the_device() {
    for (addr, writable) in [(MEM_SIZE - 256, true), (u64::MAX - 100, false)] {
        let mut r = rig(4096, false);
        r.request(0, VIRTIO_BLK_T_IN, 0, addr, 512, writable);
        r.offer(&[0]);
        assert!(matches!(
            r.q.process(),
            Err(QueueError::Chain(ChainError::OutsideMemory { head: 0, .. }))
        ));
        assert!(r.health.is_broken());
        assert!(r.used().is_empty());
        assert_eq!(r.status(0), 0xff, "nothing reached the request");
    }
}

#[test]
fn an_avail_index_beyond_the_queue_size_breaks_the_device() {
    let mut r = rig(4096, false);
    r.mem.write_obj(SIZE + 1, GuestAddress(AVAIL + 2)).unwrap();
    assert!(matches!(r.q.process(), Err(QueueError::AvailRing(_))));
    assert!(r.health.is_broken());
    assert_eq!(
        r.q.process().unwrap(),
        0,
        "a broken device ignores the queue"
    );
}

/// Every buffer the driver marked device-writable (in the descriptor table, and in any
/// indirect table a descriptor of it points to), and whether one of them overlaps a table or
/// the avail ring: then the device's own writes may legitimately rewrite the requests, and
/// the initial list no longer bounds what changes.
fn writable_ranges(mem: &GuestMemoryMmap) -> (Vec<(u64, u64)>, bool) {
    let mut out = Vec::new();
    // The rings: a device-writable buffer over any of them lets the device's own writes (a status
    // byte, data) change what the driver and the device later read there.
    let mut tables = vec![
        (DESC, 16 * u64::from(SIZE)),
        (AVAIL, 4 + 2 * u64::from(SIZE)),
        (USED, 6 + 8 * u64::from(SIZE)),
    ];
    for i in 0..u64::from(SIZE) {
        let d: Descriptor = mem.read_obj(GuestAddress(DESC + 16 * i)).unwrap();
        if d.flags() & F_INDIRECT != 0 {
            tables.push((d.addr().0, u64::from(d.len())));
            // Read the reachable part of the table at once (entries past the end of memory
            // end the walk), then parse it.
            let start = d.addr().0;
            let end = start
                .saturating_add(u64::from(d.len() / 16) * 16)
                .min(MEM_SIZE);
            if start < end {
                let mut table = vec![0u8; (end - start) as usize];
                mem.read_slice(&mut table, GuestAddress(start)).unwrap();
                for e in table.chunks_exact(16) {
                    let flags = u16::from_le_bytes([e[12], e[13]]);
                    if flags & F_WRITE != 0 {
                        let addr = u64::from_le_bytes(e[..8].try_into().unwrap());
                        let len = u32::from_le_bytes(e[8..12].try_into().unwrap());
                        out.push((addr, u64::from(len)));
                    }
                }
            }
        } else if d.flags() & F_WRITE != 0 {
            out.push((d.addr().0, u64::from(d.len())));
        }
    }
    let overlaps = |(a, al): &(u64, u64), (b, bl): &(u64, u64)| {
        *al > 0 && *bl > 0 && a.saturating_add(*al) > *b && b.saturating_add(*bl) > *a
    };
    let self_modifying = out.iter().any(|w| tables.iter().any(|t| overlaps(w, t)));
    (out, self_modifying)
}

/// Whether the chain at `head` is one a driver may make, walked as the spec describes it (a
/// model of `crate::virtio::chain`, written apart from it): every descriptor inside the table,
/// at most as many as the table has, no indirect table inside an indirect one, tables a
/// multiple of 16 bytes long, every buffer in memory, at most 4 GiB in all.
fn well_formed(mem: &GuestMemoryMmap, head: u16) -> bool {
    let (mut table, mut size, mut index, mut indirect) = (DESC, u64::from(SIZE), u64::from(head), false);
    let (mut left, mut total) = (size, 0u64);
    loop {
        if index >= size {
            return false;
        }
        let Ok(d) = mem.read_obj::<Descriptor>(GuestAddress(table + 16 * index)) else {
            return false;
        };
        if d.flags() & F_INDIRECT != 0 {
            if indirect || !d.len().is_multiple_of(16) || d.len() / 16 > u32::from(u16::MAX) {
                return false;
            }
            (table, size, index, indirect) = (d.addr().0, u64::from(d.len() / 16), 0, true);
            left = size;
            continue;
        }
        let (addr, len) = (d.addr().0, u64::from(d.len()));
        if len > 0 && addr.checked_add(len).is_none_or(|end| end > MEM_SIZE) {
            return false;
        }
        total += len;
        if total > u64::from(u32::MAX) {
            return false;
        }
        if d.flags() & F_NEXT == 0 {
            return true;
        }
        left -= 1;
        if left == 0 {
            return false;
        }
        index = u64::from(d.next());
    }
}

/// One arbitrary descriptor: addresses near the interesting places (data area, rings, end
/// of memory, far outside), arbitrary lengths, flags and next indices.
fn arb_desc() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    let addr = prop_oneof![
        (0u64..0x2000).prop_map(|o| DATA + o),
        (0u64..0x40).prop_map(|o| DESC + o * 8),
        (0u64..0x1000).prop_map(|o| MEM_SIZE - o),
        any::<u64>(),
    ];
    let len = prop_oneof![0u32..64, 0u32..0x2000, any::<u32>()];
    (addr, len, 0u16..8, 0u16..(SIZE + 4))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Whatever the driver puts in the descriptor table, the avail ring and the request
    /// headers, processing returns (no panic, no hang), never writes the disk past its end or
    /// a read-only disk (MemDisk would panic), and either reports each chain on the used ring
    /// with a length no larger than its writable bytes or marks the device broken.
    #[test]
    fn arbitrary_queues_never_panic_hang_or_overrun(
        descs in proptest::collection::vec(arb_desc(), SIZE as usize),
        heads in proptest::collection::vec(0u16..(SIZE + 2), 0..(SIZE as usize)),
        extra_idx in 0u16..3,
        headers in proptest::collection::vec((0u32..16, 0u64..20), 8),
        read_only in any::<bool>(),
    ) {
        let mut r = rig(8192, read_only);
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            r.desc(i as u16, *addr, *len, *flags, *next);
        }
        for (i, (kind, sector)) in headers.iter().enumerate() {
            r.mem.write_obj(*kind, GuestAddress(DATA + 0x400 * i as u64)).unwrap();
            r.mem.write_obj(*sector, GuestAddress(DATA + 0x400 * i as u64 + 8)).unwrap();
        }
        r.offer(&heads);
        if extra_idx > 0 {
            let idx: u16 = r.mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
            r.mem.write_obj(idx.wrapping_add(extra_idx * SIZE), GuestAddress(AVAIL + 2)).unwrap();
        }
        let before = r.disk.lock().unwrap().size();
        let (allowed, self_modifying) = writable_ranges(&r.mem);
        let mut mem_before = vec![0u8; MEM_SIZE as usize];
        r.mem.read_slice(&mut mem_before, GuestAddress(0)).unwrap();
        let result = r.q.process();
        prop_assert_eq!(r.disk.lock().unwrap().size(), before);
        let mut mem_after = vec![0u8; MEM_SIZE as usize];
        r.mem.read_slice(&mut mem_after, GuestAddress(0)).unwrap();
        let used_ring = USED..USED + 6 + 8 * u64::from(SIZE);
        let pages = mem_before.chunks(4096).zip(mem_after.chunks(4096)).enumerate();
        for (page, (before_page, after_page)) in pages.filter(|(_, (x, y))| x != y) {
            for (i, (x, y)) in before_page.iter().zip(after_page).enumerate() {
                let a = (page * 4096 + i) as u64;
                if x != y && !used_ring.contains(&a) && !self_modifying {
                    prop_assert!(
                        allowed.iter().any(|(s, l)| a >= *s && a - s < *l),
                        "byte {a:#x} changed outside every device-writable buffer"
                    );
                }
            }
        }
        // What the driver offered: its heads, or (index pushed by whole queue sizes) the
        // never-written slots, which hold head 0.
        let offered = heads.len() + usize::from(extra_idx) * usize::from(SIZE);
        let ring: Vec<u16> = if extra_idx == 0 { heads.clone() } else { vec![0; offered] };
        if offered > usize::from(SIZE) {
            prop_assert!(matches!(result, Err(QueueError::AvailRing(_))), "{result:?}");
            prop_assert!(r.health.is_broken());
            prop_assert!(r.used().is_empty());
        } else {
            let used_ids: Vec<u32> = r.used().iter().map(|(id, _)| *id).collect();
            match ring.iter().position(|&h| !well_formed(&r.mem, h)) {
                // A device-writable buffer over the rings: the device's own writes (a read's
                // data) may rewrite the avail ring's index it reads next, so the queue may end
                // broken; the device must say so, and otherwise go on.
                None if self_modifying => match &result {
                    Ok(_) => prop_assert!(!r.health.is_broken()),
                    Err(e) => prop_assert!(r.health.is_broken(), "{e:?} without a broken device"),
                },
                None => {
                    prop_assert_eq!(result.unwrap(), offered);
                    prop_assert!(!r.health.is_broken());
                    prop_assert_eq!(used_ids, ring.iter().map(|&h| u32::from(h)).collect::<Vec<_>>());
                }
                Some(_) if self_modifying => {
                    prop_assert!(result.is_err() == r.health.is_broken(), "{result:?}");
                }
                Some(bad) => {
                    prop_assert!(matches!(result, Err(QueueError::Chain(_))), "{result:?}");
                    prop_assert!(r.health.is_broken());
                    prop_assert_eq!(used_ids, ring[..bad].iter().map(|&h| u32::from(h)).collect::<Vec<_>>());
                }
            }
        }
    }

    /// Well-formed writes followed by reads at arbitrary sectors and lengths behave like a
    /// plain byte array; requests past the end fail and leave it unchanged.
    #[test]
    fn well_formed_requests_match_a_byte_array_model(
        ops in proptest::collection::vec((0u64..20, 1u32..5, any::<u8>()), 1..6),
    ) {
        let mut r = rig(8192, false);
        let mut model: Vec<u8> = (0..8192).map(|i| (i / 512) as u8).collect();
        for (sector, sectors, fill) in ops {
            let len = sectors * 512;
            r.mem.write_slice(&vec![fill; len as usize], GuestAddress(BUF)).unwrap();
            r.request(0, VIRTIO_BLK_T_OUT, sector, BUF, len, false);
            r.request(3, VIRTIO_BLK_T_IN, sector, BUF + 0x4000, len, true);
            r.offer(&[0, 3]);
            r.q.process().unwrap();
            let fits = (sector * 512 + u64::from(len)) <= 8192;
            let expected = if fits { VIRTIO_BLK_S_OK } else { VIRTIO_BLK_S_IOERR };
            prop_assert_eq!(r.status(0), expected);
            prop_assert_eq!(r.status(3), expected);
            if fits {
                let o = (sector * 512) as usize;
                model[o..o + len as usize].fill(fill);
                let mut back = vec![0u8; len as usize];
                r.mem.read_slice(&mut back, GuestAddress(BUF + 0x4000)).unwrap();
                prop_assert_eq!(back, vec![fill; len as usize]);
            }
            prop_assert_eq!(r.disk_bytes(0, 8192), model.clone());
        }
    }
}
