//! virtio-console (type 3), single port: the transmit queue's buffers go to a host `Write`,
//! bytes the host sends ([`ConsoleInput::send`]) fill the receive queue's buffers. A corrupt
//! ring or a chain the spec forbids (a loop, a `next` past the table, a bad indirect table, a
//! buffer outside guest memory: `crate::virtio::chain`) is the driver's error:
//! `DEVICE_NEEDS_RESET` and a configuration change notification, and nothing more moves (no
//! output written, no input taken) until the driver resets the device.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, PoisonError};

use crate::memory::GuestMemoryMmap;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::chain::check_chain;
use super::device::{ActivateContext, ActivateError, VirtioDevice, read_config_bytes};
use super::report::{QueueReporter, RingError};
use super::worker::{QueueHandler, Worker};
use crate::bus::DeviceStateError;
use crate::virtio::device::{pause_worker, resume_worker};

/// The virtio device type of a console.
pub const VIRTIO_ID_CONSOLE: u32 = 3;
/// Entries per queue.
pub const QUEUE_SIZE: u16 = 64;
/// Bytes taken from one transmit buffer at most (the rest is dropped).
pub const MAX_TX_BYTES: usize = 64 << 10;
/// Bytes of host input held for the guest at most; more is refused.
pub const MAX_PENDING_INPUT: usize = 1 << 20;
const RX: usize = 0;
const TX: usize = 1;
const INPUT: usize = 2;

/// The host's side of the console input: bytes sent here reach the guest's receive buffers.
#[derive(Clone, Debug)]
pub struct ConsoleInput {
    pending: Arc<Mutex<VecDeque<u8>>>,
    event: Arc<EventFd>,
}

impl ConsoleInput {
    /// Queues `bytes` for the guest; returns how many fit (see [`MAX_PENDING_INPUT`]).
    pub fn send(&self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let n = bytes.len().min(MAX_PENDING_INPUT.saturating_sub(p.len()));
            p.extend(&bytes[..n]);
            n
        };
        self.event.write(1)?;
        Ok(n)
    }
}

type SharedOutput = Arc<Mutex<Box<dyn Write + Send>>>;

/// A virtio-console device.
pub struct Console {
    output: SharedOutput,
    input: ConsoleInput,
    config: [u8; 12],
    worker: Option<Worker<ConsoleQueues>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("active", &self.worker.is_some())
            .finish()
    }
}

impl Console {
    /// A console writing guest output to `output`.
    pub fn new(output: Box<dyn Write + Send>) -> std::io::Result<Console> {
        let mut config = [0u8; 12];
        config[0..2].copy_from_slice(&80u16.to_le_bytes()); // cols
        config[2..4].copy_from_slice(&25u16.to_le_bytes()); // rows
        config[4..8].copy_from_slice(&1u32.to_le_bytes()); // max_nr_ports
        Ok(Console {
            output: Arc::new(Mutex::new(output)),
            input: ConsoleInput {
                pending: Arc::new(Mutex::new(VecDeque::new())),
                event: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?),
            },
            config,
            worker: None,
        })
    }

    /// The handle to send input to the guest.
    pub fn input(&self) -> ConsoleInput {
        self.input.clone()
    }
}

/// The console's queues on the worker thread.
pub struct ConsoleQueues {
    memory: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    output: SharedOutput,
    input: ConsoleInput,
    report: QueueReporter,
}

impl std::fmt::Debug for ConsoleQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleQueues").finish()
    }
}

impl ConsoleQueues {
    /// Writes every transmit buffer to the output; returns how many completed.
    pub fn process_tx(&mut self) -> Result<usize, RingError> {
        if self.report.is_broken() || !self.tx.ready() {
            return Ok(0);
        }
        let result = self.transmit_available();
        self.report
            .finish(&mut self.tx, &self.memory, TX as u16, &result);
        result
    }

    fn transmit_available(&mut self) -> Result<usize, RingError> {
        let mut done = 0;
        let mut buf = vec![0u8; 4096];
        loop {
            let chains: Vec<_> = self
                .tx
                .iter(&self.memory)
                .map_err(|source| RingError::AvailRing { queue: TX, source })?
                .collect();
            if chains.is_empty() {
                return Ok(done);
            }
            let mut out = self.output.lock().unwrap_or_else(PoisonError::into_inner);
            for chain in chains {
                let head = chain.head_index();
                check_chain(&chain, &self.memory)
                    .map_err(|source| RingError::Chain { queue: TX, source })?;
                if let Ok(mut r) = chain.reader(&self.memory) {
                    let mut left = r.available_bytes().min(MAX_TX_BYTES);
                    while left > 0 {
                        let n = left.min(buf.len());
                        if r.read_exact(&mut buf[..n]).is_err() || out.write_all(&buf[..n]).is_err()
                        {
                            break;
                        }
                        left -= n;
                    }
                }
                let _ = out.flush();
                self.tx
                    .add_used(&self.memory, head, 0)
                    .map_err(|source| RingError::UsedRing {
                        queue: TX,
                        head,
                        source,
                    })?;
                done += 1;
            }
        }
    }

    /// Moves pending input into receive buffers while both exist; returns buffers used.
    pub fn process_rx(&mut self) -> Result<usize, RingError> {
        if self.report.is_broken() || !self.rx.ready() {
            return Ok(0);
        }
        let result = self.receive_available();
        self.report
            .finish(&mut self.rx, &self.memory, RX as u16, &result);
        result
    }

    fn receive_available(&mut self) -> Result<usize, RingError> {
        let mut done = 0;
        loop {
            let mut pending = self
                .input
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pending.is_empty() {
                return Ok(done);
            }
            let Some(chain) = self
                .rx
                .iter(&self.memory)
                .map_err(|source| RingError::AvailRing { queue: RX, source })?
                .next()
            else {
                return Ok(done);
            };
            let head = chain.head_index();
            // Checked before any input is taken: a bad chain loses none of it.
            check_chain(&chain, &self.memory)
                .map_err(|source| RingError::Chain { queue: RX, source })?;
            let mut written = 0;
            if let Ok(mut w) = chain.writer(&self.memory) {
                let n = w.available_bytes().min(pending.len());
                let bytes: Vec<u8> = pending.drain(..n).collect();
                if w.write_all(&bytes).is_ok() {
                    written = n as u32;
                }
            }
            drop(pending);
            self.rx
                .add_used(&self.memory, head, written)
                .map_err(|source| RingError::UsedRing {
                    queue: RX,
                    head,
                    source,
                })?;
            done += 1;
        }
    }
}

impl QueueHandler for ConsoleQueues {
    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        vec![self.rx.state(), self.tx.state()]
    }

    fn handle_queue(&mut self, index: usize) {
        match index {
            // An error is logged and reported to the driver by `process_*`.
            TX => {
                let _ = self.process_tx();
            }
            RX | INPUT => {
                let _ = self.process_rx();
            }
            _ => {}
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        let mut queues = context.queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueNotReady(TX));
        };
        if !tx.queue.ready() {
            return Err(ActivateError::QueueNotReady(TX));
        }
        let input_event = self
            .input
            .event
            .try_clone()
            .map_err(ActivateError::Worker)?;
        let handler = ConsoleQueues {
            memory: context.memory,
            rx: rx.queue,
            tx: tx.queue,
            output: self.output.clone(),
            input: self.input.clone(),
            report: QueueReporter::new("virtio-console", context.interrupt, context.health),
        };
        self.worker = Some(
            Worker::spawn(
                "virtio-console".into(),
                vec![rx.event, tx.event, input_event],
                handler,
            )
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
    use crate::virtio::{ChainError, HealthFlag};

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Queue `base`: descriptors at base, avail at base + 0x1000, used at base + 0x2000.
    fn queue(base: u64) -> Queue {
        crate::virtio::test_utils::ready_queue(16, base, base + 0x1000, base + 0x2000)
    }

    /// Descriptors `(addr, len, flags)` at 0, 1, ... of queue `base`, each its own chain, all
    /// made available.
    fn offer(mem: &GuestMemoryMmap, base: u64, descs: &[(u64, u32, u16)]) {
        let chained: Vec<_> = descs.iter().map(|&(a, l, f)| (a, l, f, 0)).collect();
        offer_chains(mem, base, &chained, descs.len() as u16);
    }

    /// Descriptors `(addr, len, flags, next)` at 0, 1, ...; heads 0..`heads` made available.
    fn offer_chains(mem: &GuestMemoryMmap, base: u64, descs: &[(u64, u32, u16, u16)], heads: u16) {
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            mem.write_obj(
                Descriptor::new(addr, len, flags, next),
                GuestAddress(base + 16 * i as u64),
            )
            .unwrap();
        }
        for i in 0..heads {
            mem.write_obj(i, GuestAddress(base + 0x1004 + 2 * u64::from(i)))
                .unwrap();
        }
        mem.write_obj(heads, GuestAddress(base + 0x1002)).unwrap();
    }

    fn used_idx(mem: &GuestMemoryMmap, base: u64) -> u16 {
        mem.read_obj(GuestAddress(base + 0x2002)).unwrap()
    }

    fn rig() -> (ConsoleQueues, Sink, ConsoleInput, HealthFlag) {
        let sink = Sink::default();
        let console = Console::new(Box::new(sink.clone())).unwrap();
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4_0000)]).unwrap();
        let input = console.input();
        let health = HealthFlag::default();
        let q = ConsoleQueues {
            memory,
            rx: queue(0x1000),
            tx: queue(0x4000),
            output: console.output.clone(),
            input: input.clone(),
            report: QueueReporter::new("virtio-console", Arc::new(NoInterrupt), health.clone()),
        };
        (q, sink, input, health)
    }

    #[test]
    fn guest_output_reaches_the_host_and_a_buffer_outside_memory_breaks_the_device() {
        let (mut q, sink, _, health) = rig();
        q.memory
            .write_slice(b"hello ", GuestAddress(0x1_0000))
            .unwrap();
        q.memory
            .write_slice(b"console\n", GuestAddress(0x1_1000))
            .unwrap();
        offer(
            &q.memory,
            0x4000,
            &[(0x1_0000, 6, 0), (0x9_0000, 6, 0), (0x1_1000, 8, 0)],
        );
        assert!(matches!(
            q.process_tx(),
            Err(RingError::Chain {
                queue: TX,
                source: ChainError::OutsideMemory { head: 1, .. }
            })
        ));
        assert!(health.is_broken());
        assert_eq!(
            &*sink.0.lock().unwrap(),
            b"hello ",
            "the chain before the bad one went out, nothing after it"
        );
        assert_eq!(used_idx(&q.memory, 0x4000), 1);
        assert_eq!(q.process_tx().unwrap(), 0, "broken until reset");
        assert_eq!(&*sink.0.lock().unwrap(), b"hello ");
    }

    #[test]
    fn a_transmit_loop_breaks_the_device_and_writes_nothing() {
        let (mut q, sink, _, health) = rig();
        q.memory
            .write_slice(b"loop", GuestAddress(0x1_0000))
            .unwrap();
        offer_chains(
            &q.memory,
            0x4000,
            &[(0x1_0000, 4, NEXT, 1), (0x1_0000, 4, NEXT, 0)],
            1,
        );
        q.handle_queue(TX);
        assert!(health.is_broken());
        assert!(sink.0.lock().unwrap().is_empty(), "a loop is not output");
        assert_eq!(used_idx(&q.memory, 0x4000), 0);
    }

    #[test]
    fn a_bad_receive_chain_breaks_the_device_and_keeps_the_input() {
        let (mut q, _, input, health) = rig();
        input.send(b"abc").unwrap();
        // `next` past the 16-entry table.
        offer_chains(&q.memory, 0x1000, &[(0x2_0000, 8, WRITE | NEXT, 99)], 1);
        assert!(matches!(
            q.process_rx(),
            Err(RingError::Chain {
                queue: RX,
                source: ChainError::Truncated { head: 0, .. }
            })
        ));
        assert!(health.is_broken());
        assert_eq!(used_idx(&q.memory, 0x1000), 0);
        let mut got = [0u8; 3];
        q.memory
            .read_slice(&mut got, GuestAddress(0x2_0000))
            .unwrap();
        assert_eq!(got, [0; 3], "nothing was written into the bad chain");
        assert_eq!(q.input.pending.lock().unwrap().len(), 3, "the input waits");
    }

    #[test]
    fn host_input_fills_receive_buffers_in_order_and_waits_for_more() {
        let (mut q, _, input, _) = rig();
        assert_eq!(input.send(b"abcdefgh").unwrap(), 8);
        assert_eq!(
            q.process_rx().unwrap(),
            0,
            "no buffers yet: input stays pending"
        );
        offer(&q.memory, 0x1000, &[(0x2_0000, 5, 2), (0x2_1000, 16, 2)]);
        assert_eq!(q.process_rx().unwrap(), 2);
        let mut a = [0u8; 5];
        let mut b = [0u8; 3];
        q.memory.read_slice(&mut a, GuestAddress(0x2_0000)).unwrap();
        q.memory.read_slice(&mut b, GuestAddress(0x2_1000)).unwrap();
        assert_eq!((&a, &b), (b"abcde", b"fgh"));
        let used_len: u32 = q.memory.read_obj(GuestAddress(0x3000 + 4 + 8 + 4)).unwrap();
        assert_eq!(used_len, 3);
    }

    #[test]
    fn a_corrupt_transmit_ring_breaks_the_device() {
        let (mut q, sink, input, health) = rig();
        q.memory.write_obj(100u16, GuestAddress(0x5002)).unwrap();
        q.handle_queue(TX);
        assert!(health.is_broken());
        // A broken device moves nothing until reset.
        input.send(b"x").unwrap();
        offer(&q.memory, 0x1000, &[(0x2_0000, 5, 2)]);
        q.handle_queue(INPUT);
        assert_eq!(q.process_rx().unwrap(), 0);
        assert!(sink.0.lock().unwrap().is_empty());
    }
}
