//! virtio-rng (entropy device, type 4): each device-writable buffer the driver offers is
//! filled from the host's `getrandom(2)`, at most [`MAX_BYTES_PER_REQUEST`] per request. A
//! device-readable buffer gets nothing (used length 0). A corrupt ring or a chain the spec
//! forbids (a loop, a `next` past the table, a bad indirect table, a buffer outside guest
//! memory: `crate::virtio::chain`) is the driver's error: `DEVICE_NEEDS_RESET` and a
//! configuration change notification, and nothing more until the driver resets the device.

use std::io::Write;

use crate::memory::GuestMemoryMmap;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::chain::check_chain;
use super::device::{ActivateContext, ActivateError, VirtioDevice};
use super::report::{QueueReporter, RingError};
use super::worker::{QueueHandler, Worker};
use crate::bus::DeviceStateError;
use crate::virtio::device::{pause_worker, resume_worker};

/// The virtio device type of an entropy source.
pub const VIRTIO_ID_RNG: u32 = 4;
/// Entries in the request queue.
pub const QUEUE_SIZE: u16 = 64;
/// Bytes one request gets at most (the used length says how many it got).
pub const MAX_BYTES_PER_REQUEST: usize = 64 << 10;

/// Fills `buf` with random bytes from the kernel.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// The request queue of an rng device.
pub struct RngQueue {
    memory: GuestMemoryMmap,
    queue: Queue,
    report: QueueReporter,
}

impl std::fmt::Debug for RngQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RngQueue")
            .field("queue", &self.queue)
            .finish()
    }
}

impl RngQueue {
    /// Fills every available buffer; returns how many requests completed. A corrupt ring or
    /// a malformed chain marks the device broken and notifies the driver; requests completed
    /// before it are on the used ring.
    pub fn process(&mut self) -> Result<usize, RingError> {
        if self.report.is_broken() {
            return Ok(0);
        }
        let result = self.fill_available();
        self.report
            .finish(&mut self.queue, &self.memory, 0, &result);
        result
    }

    fn fill_available(&mut self) -> Result<usize, RingError> {
        let mut done = 0;
        let mut random = vec![0u8; 4096];
        loop {
            let chains: Vec<_> = self
                .queue
                .iter(&self.memory)
                .map_err(|source| RingError::AvailRing { queue: 0, source })?
                .collect();
            if chains.is_empty() {
                return Ok(done);
            }
            for chain in chains {
                let head = chain.head_index();
                check_chain(&chain, &self.memory)
                    .map_err(|source| RingError::Chain { queue: 0, source })?;
                let mut written = 0;
                if let Ok(mut w) = chain.writer(&self.memory) {
                    let mut want = w.available_bytes().min(MAX_BYTES_PER_REQUEST);
                    while want > 0 {
                        let n = want.min(random.len());
                        if getrandom(&mut random[..n]).is_err()
                            || w.write_all(&random[..n]).is_err()
                        {
                            break;
                        }
                        want -= n;
                    }
                    written = w.bytes_written() as u32;
                }
                self.queue
                    .add_used(&self.memory, head, written)
                    .map_err(|source| RingError::UsedRing {
                        queue: 0,
                        head,
                        source,
                    })?;
                done += 1;
            }
        }
    }
}

impl QueueHandler for RngQueue {
    fn handle_queue(&mut self, _index: usize) {
        // An error is logged and reported to the driver by `process`.
        let _ = self.process();
    }

    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        vec![self.queue.state()]
    }
}

/// A virtio-rng device.
#[derive(Debug, Default)]
pub struct Rng {
    worker: Option<Worker<RngQueue>>,
}

impl Rng {
    /// An entropy device fed by the host kernel.
    pub fn new() -> Self {
        Rng::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        super::VIRTIO_RING_F_INDIRECT_DESC
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        let Some(q) = context
            .queues
            .into_iter()
            .next()
            .filter(|q| q.queue.ready())
        else {
            return Err(ActivateError::QueueNotReady(0));
        };
        let handler = RngQueue {
            memory: context.memory,
            queue: q.queue,
            report: QueueReporter::new("virtio-rng", context.interrupt, context.health),
        };
        self.worker = Some(
            Worker::spawn("virtio-rng".into(), vec![q.event], handler)
                .map_err(ActivateError::Worker)?,
        );
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }

    fn pause(&mut self) -> Result<Vec<virtio_queue::QueueState>, DeviceStateError> {
        pause_worker(self.worker.as_mut())
    }

    fn resume(&mut self) -> Result<(), DeviceStateError> {
        resume_worker(self.worker.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::split::Descriptor;
    use vm_memory::{Bytes, GuestAddress};

    use std::sync::Arc;

    use crate::virtio::test_utils::NoInterrupt;
    use crate::virtio::{ChainError, HealthFlag};

    fn rig() -> (RngQueue, HealthFlag) {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4_0000)]).unwrap();
        let queue = crate::virtio::test_utils::ready_queue(16, 0x1000, 0x2000, 0x3000);
        let health = HealthFlag::default();
        let q = RngQueue {
            memory,
            queue,
            report: QueueReporter::new("virtio-rng", Arc::new(NoInterrupt), health.clone()),
        };
        (q, health)
    }

    /// Descriptors `(addr, len, flags)` at 0, 1, ... each its own chain, all made available.
    fn offer(q: &RngQueue, descs: &[(u64, u32, u16)]) {
        let chained: Vec<_> = descs.iter().map(|&(a, l, f)| (a, l, f, 0)).collect();
        offer_chains(q, &chained, descs.len() as u16);
    }

    /// Descriptors `(addr, len, flags, next)` at 0, 1, ...; heads 0..`heads` made available.
    fn offer_chains(q: &RngQueue, descs: &[(u64, u32, u16, u16)], heads: u16) {
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            q.memory
                .write_obj(
                    Descriptor::new(addr, len, flags, next),
                    GuestAddress(0x1000 + 16 * i as u64),
                )
                .unwrap();
        }
        for i in 0..heads {
            q.memory
                .write_obj(i, GuestAddress(0x2004 + 2 * u64::from(i)))
                .unwrap();
        }
        q.memory.write_obj(heads, GuestAddress(0x2002)).unwrap();
    }

    fn used(q: &RngQueue, i: u64) -> (u32, u32) {
        (
            q.memory.read_obj(GuestAddress(0x3004 + 8 * i)).unwrap(),
            q.memory.read_obj(GuestAddress(0x3008 + 8 * i)).unwrap(),
        )
    }

    #[test]
    fn writable_buffers_get_random_bytes_and_read_only_ones_get_none() {
        let (mut q, _) = rig();
        offer(&q, &[(0x1_0000, 4096, 2), (0x2_0000, 64, 0)]);
        assert_eq!(q.process().unwrap(), 2);
        assert_eq!(used(&q, 0), (0, 4096));
        assert_eq!(used(&q, 1), (1, 0), "a device-readable buffer gets nothing");
        let mut bytes = vec![0u8; 4096];
        q.memory
            .read_slice(&mut bytes, GuestAddress(0x1_0000))
            .unwrap();
        // 4096 random bytes: all zero with probability 2^-32768; many distinct values.
        let distinct: std::collections::BTreeSet<u8> = bytes.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "{} distinct byte values",
            distinct.len()
        );
    }

    #[test]
    fn huge_requests_are_capped_and_a_corrupt_ring_breaks_the_device() {
        let (mut q, health) = rig();
        offer(&q, &[(0x4000, 0x3_c000, 2)]);
        q.process().unwrap();
        assert_eq!(used(&q, 0), (0, MAX_BYTES_PER_REQUEST as u32));
        q.memory.write_obj(500u16, GuestAddress(0x2002)).unwrap();
        assert!(matches!(q.process(), Err(RingError::AvailRing { .. })));
        assert!(health.is_broken());
    }

    #[test]
    fn a_buffer_outside_memory_breaks_the_device_and_it_stays_broken() {
        let (mut q, health) = rig();
        // A good request, then one past RAM (0x4_0000), then a good one never reached.
        offer(
            &q,
            &[(0x1_0000, 16, 2), (0x10_0000, 64, 2), (0x1_1000, 16, 2)],
        );
        assert!(matches!(
            q.process(),
            Err(RingError::Chain {
                queue: 0,
                source: ChainError::OutsideMemory {
                    head: 1,
                    addr: 0x10_0000,
                    len: 64
                }
            })
        ));
        assert!(health.is_broken());
        assert_eq!(used(&q, 0), (0, 16), "the request before it completed");
        let used_idx: u16 = q.memory.read_obj(GuestAddress(0x3002)).unwrap();
        assert_eq!(
            used_idx, 1,
            "the bad chain and the one after it are not used"
        );
        // Broken: a notification moves nothing until the transport's reset.
        assert_eq!(q.process().unwrap(), 0);
    }

    #[test]
    fn a_descriptor_loop_and_a_next_past_the_table_break_the_device() {
        for descs in [
            vec![(0x1_0000, 16, 2 | 1, 1), (0x1_1000, 16, 2 | 1, 0)],
            vec![(0x1_0000, 16, 2 | 1, 40)],
        ] {
            let (mut q, health) = rig();
            offer_chains(&q, &descs, 1);
            assert!(
                matches!(
                    q.process(),
                    Err(RingError::Chain {
                        source: ChainError::Truncated { head: 0, .. },
                        ..
                    })
                ),
                "{descs:?}"
            );
            assert!(health.is_broken());
            let used_idx: u16 = q.memory.read_obj(GuestAddress(0x3002)).unwrap();
            assert_eq!(used_idx, 0, "nothing was written for it");
        }
    }
}
