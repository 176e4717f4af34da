//! virtio-rng (entropy device, type 4): each device-writable buffer the driver offers is
//! filled from the host's `getrandom(2)`, at most [`MAX_BYTES_PER_REQUEST`] per request.

use std::io::Write;
use std::sync::Arc;

use crate::memory::GuestMemoryMmap;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::device::{
    ActivateContext, ActivateError, HealthFlag, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
};
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
    interrupt: Arc<dyn VirtioInterrupt>,
    health: HealthFlag,
}

impl std::fmt::Debug for RngQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RngQueue")
            .field("queue", &self.queue)
            .finish()
    }
}

impl RngQueue {
    /// Fills every available buffer; returns how many requests completed. A corrupt ring
    /// marks the device broken.
    pub fn process(&mut self) -> Result<usize, virtio_queue::Error> {
        if self.health.is_broken() {
            return Ok(0);
        }
        let result = self.fill_available();
        match &result {
            Err(_) => {
                self.health.mark_broken();
                let _ = self.interrupt.trigger(VirtioInterruptType::Config);
            }
            Ok(n) if *n > 0 => {
                if self.queue.needs_notification(&self.memory).unwrap_or(true) {
                    let _ = self.interrupt.trigger(VirtioInterruptType::Queue(0));
                }
            }
            Ok(_) => {}
        }
        result
    }

    fn fill_available(&mut self) -> Result<usize, virtio_queue::Error> {
        let mut done = 0;
        let mut random = vec![0u8; 4096];
        loop {
            let chains: Vec<_> = self.queue.iter(&self.memory)?.collect();
            if chains.is_empty() {
                return Ok(done);
            }
            for chain in chains {
                let head = chain.head_index();
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
                self.queue.add_used(&self.memory, head, written)?;
                done += 1;
            }
        }
    }
}

impl QueueHandler for RngQueue {
    fn handle_queue(&mut self, _index: usize) {
        if let Err(e) = self.process() {
            log::warn!("virtio-rng: corrupt queue ({e}); the device needs a reset");
        }
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
            interrupt: context.interrupt,
            health: context.health,
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

    use crate::virtio::test_utils::NoInterrupt;

    fn rig() -> RngQueue {
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4_0000)]).unwrap();
        let queue = crate::virtio::test_utils::ready_queue(16, 0x1000, 0x2000, 0x3000);
        RngQueue {
            memory,
            queue,
            interrupt: Arc::new(NoInterrupt),
            health: HealthFlag::default(),
        }
    }

    fn offer(q: &RngQueue, descs: &[(u64, u32, u16)]) {
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            q.memory
                .write_obj(
                    Descriptor::new(addr, len, flags, 0),
                    GuestAddress(0x1000 + 16 * i as u64),
                )
                .unwrap();
            q.memory
                .write_obj(i as u16, GuestAddress(0x2004 + 2 * i as u64))
                .unwrap();
        }
        q.memory
            .write_obj(descs.len() as u16, GuestAddress(0x2002))
            .unwrap();
    }

    fn used(q: &RngQueue, i: u64) -> (u32, u32) {
        (
            q.memory.read_obj(GuestAddress(0x3004 + 8 * i)).unwrap(),
            q.memory.read_obj(GuestAddress(0x3008 + 8 * i)).unwrap(),
        )
    }

    #[test]
    fn writable_buffers_get_random_bytes_read_only_and_bad_ones_get_none() {
        let mut q = rig();
        offer(
            &q,
            &[(0x1_0000, 4096, 2), (0x2_0000, 64, 0), (0x10_0000, 64, 2)],
        );
        assert_eq!(q.process().unwrap(), 3);
        assert_eq!(used(&q, 0), (0, 4096));
        assert_eq!(used(&q, 1), (1, 0), "a device-readable buffer gets nothing");
        assert_eq!(used(&q, 2), (2, 0), "a buffer outside memory gets nothing");
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
        let mut q = rig();
        offer(&q, &[(0x4000, 0x3_c000, 2)]);
        q.process().unwrap();
        assert_eq!(used(&q, 0), (0, MAX_BYTES_PER_REQUEST as u32));
        q.memory.write_obj(500u16, GuestAddress(0x2002)).unwrap();
        assert!(q.process().is_err());
        assert!(q.health.is_broken());
    }
}
