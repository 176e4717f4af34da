//! Frame movement against guest memory laid out by hand, and property tests that feed both
//! queues arbitrary descriptor tables and rings.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};

use proptest::prelude::*;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::virtio::ChainError;
use crate::virtio::test_utils::NoInterrupt;

const RX_BASE: u64 = 0x1000;
const TX_BASE: u64 = 0x4000;
const DATA: u64 = 0x1_0000;
const MEM_SIZE: u64 = 0x10_0000;
const SIZE: u16 = 16;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// Frames in memory: `incoming` for the guest, `sent` from it.
#[derive(Clone, Default)]
struct MemBackend {
    incoming: Arc<Mutex<VecDeque<Vec<u8>>>>,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    fd: Option<Arc<EventFd>>,
}

impl NetBackend for MemBackend {
    fn rx_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |e| e.as_raw_fd())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.lock().unwrap().pop_front() {
            Some(f) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.sent.lock().unwrap().push(frame.to_vec());
        Ok(())
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    backend: MemBackend,
    health: HealthFlag,
    counters: Arc<NetCounters>,
}

fn queue(base: u64) -> Queue {
    crate::virtio::test_utils::ready_queue(SIZE, base, base + 0x1000, base + 0x2000)
}

fn rig() -> (Rig, NetQueues) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
    let backend = MemBackend::default();
    let health = HealthFlag::default();
    let counters = Arc::new(NetCounters::default());
    let q = NetQueues::new(
        mem.clone(),
        queue(RX_BASE),
        queue(TX_BASE),
        Arc::new(Mutex::new(Box::new(backend.clone()))),
        Arc::new(NoInterrupt),
        health.clone(),
        counters.clone(),
    );
    (
        Rig {
            mem,
            backend,
            health,
            counters,
        },
        q,
    )
}

impl Rig {
    fn desc(&self, base: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.mem
            .write_obj(
                Descriptor::new(addr, len, flags, next),
                GuestAddress(base + 16 * u64::from(i)),
            )
            .unwrap();
    }

    fn offer(&self, base: u64, heads: &[u16]) {
        let avail = base + 0x1000;
        let idx: u16 = self.mem.read_obj(GuestAddress(avail + 2)).unwrap();
        for (k, &h) in heads.iter().enumerate() {
            let slot = (idx as usize + k) % SIZE as usize;
            self.mem
                .write_obj(h, GuestAddress(avail + 4 + 2 * slot as u64))
                .unwrap();
        }
        self.mem
            .write_obj(
                idx.wrapping_add(heads.len() as u16),
                GuestAddress(avail + 2),
            )
            .unwrap();
    }

    fn used(&self, base: u64) -> Vec<(u32, u32)> {
        let used = base + 0x2000;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        (0..idx)
            .map(|i| {
                let at = used + 4 + 8 * u64::from(i % SIZE);
                (
                    self.mem.read_obj(GuestAddress(at)).unwrap(),
                    self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
                )
            })
            .collect()
    }

    fn incoming(&self, frame: Vec<u8>) {
        self.backend.incoming.lock().unwrap().push_back(frame);
    }
}

/// A frame as the backend carries it: a header with junk in it, then `payload`.
fn wire(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xee; VNET_HDR_LEN];
    f.extend_from_slice(payload);
    f
}

#[test]
fn transmitted_frames_reach_the_backend_with_a_clean_header() {
    let (r, mut q) = rig();
    let mut hdr = [0u8; VNET_HDR_LEN];
    hdr[0] = 1; // NEEDS_CSUM, not negotiated
    hdr[1] = 3; // GSO_TCPV4, not negotiated
    r.mem.write_slice(&hdr, GuestAddress(DATA)).unwrap();
    let payload: Vec<u8> = (0..60u8).collect();
    r.mem
        .write_slice(&payload, GuestAddress(DATA + 0x100))
        .unwrap();
    // Header and payload in two descriptors, then a one-descriptor frame.
    r.desc(TX_BASE, 0, DATA, VNET_HDR_LEN as u32, F_NEXT, 1);
    r.desc(TX_BASE, 1, DATA + 0x100, 60, 0, 0);
    r.mem
        .write_slice(&wire(b"second"), GuestAddress(DATA + 0x200))
        .unwrap();
    r.desc(TX_BASE, 2, DATA + 0x200, 18, 0, 0);
    let offered = [0, 2];
    r.offer(TX_BASE, &offered);
    assert_eq!(q.process_tx().unwrap(), 2);
    let sent = r.backend.sent.lock().unwrap().clone();
    let mut first = vec![0u8; VNET_HDR_LEN];
    first.extend_from_slice(&payload);
    let mut second = vec![0u8; VNET_HDR_LEN];
    second.extend_from_slice(b"second");
    assert_eq!(sent, vec![first, second]);
    assert_eq!(r.used(TX_BASE), vec![(0, 0), (2, 0)]);
    assert_eq!(r.counters.frames(), (0, 0, 2, 0));
    assert_eq!(r.counters.tx_bytes.load(Ordering::Relaxed), 66);
}

#[test]
fn malformed_transmit_chains_are_returned_unsent() {
    let (r, mut q) = rig();
    r.desc(TX_BASE, 0, DATA, 4, 0, 0); // shorter than the header
    r.desc(TX_BASE, 1, DATA, 64, F_WRITE, 0); // device-writable only: nothing to send
    r.desc(TX_BASE, 2, DATA, (MAX_FRAME_LEN + 1) as u32, 0, 0); // too long
    r.offer(TX_BASE, &[0, 1, 2]);
    assert_eq!(q.process_tx().unwrap(), 3);
    assert!(r.backend.sent.lock().unwrap().is_empty());
    assert_eq!(r.used(TX_BASE), vec![(0, 0), (1, 0), (2, 0)]);
    assert_eq!(r.counters.frames(), (0, 0, 0, 3));
    assert!(!r.health.is_broken(), "frames of a wrong size are no broken chain");
}

#[test]
fn chains_the_driver_may_not_make_break_the_device() {
    // A buffer that runs off the end of memory, and a loop, on either queue.
    for (base, queue) in [(TX_BASE, TX_QUEUE), (RX_BASE, RX_QUEUE)] {
        let write = if queue == RX_QUEUE { F_WRITE } else { 0 };
        let (r, mut q) = rig();
        r.incoming(wire(b"frame"));
        r.incoming(wire(b"again"));
        r.desc(base, 0, DATA, 20, write, 0);
        r.desc(base, 1, MEM_SIZE - 8, 64, write, 0);
        r.offer(base, &[0, 1]);
        let result = if queue == TX_QUEUE { q.process_tx() } else { q.process_rx() };
        assert!(
            matches!(
                result,
                Err(NetQueueError::Chain { queue: qi, source: ChainError::OutsideMemory { head: 1, .. } }) if qi == queue
            ),
            "{result:?}"
        );
        assert!(r.health.is_broken());
        assert_eq!(r.used(base).len(), 1, "the good chain before it completed");

        let (r, mut q) = rig();
        r.incoming(wire(b"frame"));
        r.desc(base, 0, DATA, 20, write | F_NEXT, 1);
        r.desc(base, 1, DATA + 0x100, 20, write | F_NEXT, 0);
        r.offer(base, &[0]);
        let result = if queue == TX_QUEUE { q.process_tx() } else { q.process_rx() };
        assert!(
            matches!(result, Err(NetQueueError::Chain { source: ChainError::Truncated { head: 0, .. }, .. })),
            "{result:?}"
        );
        assert!(r.health.is_broken());
        assert!(r.used(base).is_empty());
    }
}

#[test]
fn received_frames_wait_for_buffers_and_arrive_in_order() {
    let (r, mut q) = rig();
    r.incoming(wire(b"first frame"));
    r.incoming(wire(b"second"));
    assert_eq!(q.process_rx().unwrap(), 0, "no buffers: nothing moves");
    assert_eq!(
        r.backend.incoming.lock().unwrap().len(),
        1,
        "one frame held by the device"
    );
    r.desc(RX_BASE, 0, DATA, 1526, F_WRITE, 0);
    r.offer(RX_BASE, &[0]);
    assert_eq!(q.process_rx().unwrap(), 1);
    r.desc(RX_BASE, 1, DATA + 0x1000, 1526, F_WRITE, 0);
    r.offer(RX_BASE, &[1]);
    assert_eq!(q.process_rx().unwrap(), 1);
    assert_eq!(r.used(RX_BASE), vec![(0, 23), (1, 18)]);
    let mut got = [0u8; 23];
    r.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    let mut want = [0u8; 23];
    want[10] = 1; // num_buffers
    want[12..].copy_from_slice(b"first frame");
    assert_eq!(got, want);
    assert_eq!(r.counters.frames(), (2, 0, 0, 0));
}

#[test]
fn unwritable_receive_buffers_return_empty_and_small_ones_drop_the_frame() {
    let (r, mut q) = rig();
    r.incoming(wire(&[7u8; 100]));
    r.incoming(wire(&[8u8; 10]));
    r.desc(RX_BASE, 0, DATA + 0x100, 64, 0, 0); // device-readable only: frame kept
    r.desc(RX_BASE, 1, DATA, 64, F_WRITE, 0); // too small for 112 bytes: frame dropped
    r.desc(RX_BASE, 2, DATA + 0x100, 64, 0, 0); // device-readable only: no room at all
    r.desc(RX_BASE, 3, DATA + 0x200, 64, F_WRITE, 0);
    r.offer(RX_BASE, &[0, 1, 2, 3]);
    assert_eq!(q.process_rx().unwrap(), 4);
    assert_eq!(r.used(RX_BASE), vec![(0, 0), (1, 0), (2, 0), (3, 22)]);
    assert_eq!(r.counters.frames(), (1, 1, 0, 0));
}

#[test]
fn a_corrupt_ring_breaks_the_device_until_reset() {
    let (r, mut q) = rig();
    r.incoming(wire(b"x"));
    r.mem
        .write_obj(SIZE + 5, GuestAddress(RX_BASE + 0x1002))
        .unwrap();
    assert!(matches!(
        q.process_rx(),
        Err(NetQueueError::AvailRing {
            queue: RX_QUEUE,
            ..
        })
    ));
    assert!(r.health.is_broken());
    r.desc(TX_BASE, 0, DATA, 20, 0, 0);
    r.offer(TX_BASE, &[0]);
    assert_eq!(q.process_tx().unwrap(), 0, "a broken device moves nothing");
    // A head past the table: the used ring cannot take it.
    let (r, mut q) = rig();
    r.offer(TX_BASE, &[SIZE + 1]);
    assert!(q.process_tx().is_err());
    assert!(r.health.is_broken());
}

/// One arbitrary descriptor: addresses near the interesting places, any lengths and flags.
fn arb_desc() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    let addr = prop_oneof![
        (0u64..0x2000).prop_map(|o| DATA + o),
        (0u64..0x40).prop_map(|o| RX_BASE + o * 8),
        (0u64..0x1000).prop_map(|o| MEM_SIZE - o),
        any::<u64>(),
    ];
    let len = prop_oneof![0u32..64, 0u32..0x2000, any::<u32>()];
    (addr, len, 0u16..8, 0u16..(SIZE + 4))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Whatever the driver puts in both descriptor tables and rings, processing returns (no
    /// panic, no hang), completes at most what was offered, sends only frames of a legal
    /// size with a zeroed header, never delivers more bytes than a frame has, and accounts
    /// every frame either delivered, dropped or still waiting.
    #[test]
    fn arbitrary_rings_never_panic_hang_or_overrun(
        rx_descs in proptest::collection::vec(arb_desc(), SIZE as usize),
        tx_descs in proptest::collection::vec(arb_desc(), SIZE as usize),
        rx_heads in proptest::collection::vec(0u16..(SIZE + 2), 0..(SIZE as usize)),
        tx_heads in proptest::collection::vec(0u16..(SIZE + 2), 0..(SIZE as usize)),
        frames in proptest::collection::vec(0usize..3000, 0..6),
        jump in 0u16..2,
    ) {
        let (r, mut q) = rig();
        for (i, (addr, len, flags, next)) in rx_descs.iter().enumerate() {
            r.desc(RX_BASE, i as u16, *addr, *len, *flags, *next);
        }
        for (i, (addr, len, flags, next)) in tx_descs.iter().enumerate() {
            r.desc(TX_BASE, i as u16, *addr, *len, *flags, *next);
        }
        for &n in &frames {
            r.incoming(vec![0xab; n]);
        }
        r.offer(RX_BASE, &rx_heads);
        r.offer(TX_BASE, &tx_heads);
        if jump > 0 {
            let idx: u16 = r.mem.read_obj(GuestAddress(TX_BASE + 0x1002)).unwrap();
            r.mem.write_obj(idx.wrapping_add(SIZE + 1), GuestAddress(TX_BASE + 0x1002)).unwrap();
        }
        let tx = q.process_tx();
        let rx = q.process_rx();
        let tx_used = r.used(TX_BASE);
        let rx_used = r.used(RX_BASE);
        prop_assert!(tx_used.len() <= tx_heads.len());
        prop_assert!(rx_used.len() <= rx_heads.len());
        if jump > 0 {
            prop_assert!(tx.is_err());
            prop_assert!(r.health.is_broken());
        }
        if tx.is_err() || rx.is_err() {
            prop_assert!(r.health.is_broken());
        }
        for f in r.backend.sent.lock().unwrap().iter() {
            prop_assert!((VNET_HDR_LEN..=MAX_FRAME_LEN).contains(&f.len()));
            prop_assert!(f[..VNET_HDR_LEN].iter().all(|&b| b == 0));
        }
        for (_, len) in &rx_used {
            prop_assert!(*len == 0 || frames.contains(&(*len as usize)), "used length {} is no frame", len);
        }
        let (rx_frames, rx_dropped, tx_frames, tx_dropped) = r.counters.frames();
        prop_assert_eq!(tx_frames as usize, r.backend.sent.lock().unwrap().len());
        if tx.is_ok() {
            prop_assert_eq!((tx_frames + tx_dropped) as usize, tx_used.len());
        }
        let waiting = r.backend.incoming.lock().unwrap().len() + usize::from(q.rx_pending.is_some());
        prop_assert_eq!(rx_frames as usize + rx_dropped as usize + waiting, frames.len());
        prop_assert_eq!(rx_frames as usize, rx_used.iter().filter(|(_, l)| *l > 0).count());
    }
}
