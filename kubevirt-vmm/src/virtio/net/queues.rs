//! Moving frames: transmit chains from the guest to the backend, frames from the backend into
//! the guest's receive buffers, and marking the device broken if the driver corrupts a ring.
//!
//! Rules for what the guest hands over (none of which can panic, hang or reach outside guest
//! memory):
//! * a transmit chain shorter than the header or longer than [`MAX_FRAME_LEN`] is returned
//!   unsent (used length 0) and counted as dropped;
//! * a receive chain with no writable byte is returned empty and the frame waits for the next
//!   one; a receive chain too small for the frame is
//!   returned empty and the frame is dropped (a driver offering buffers smaller than the
//!   spec's 1526 bytes loses frames, but never stalls the device);
//! * a frame that arrives while the guest has no receive buffer stays in the backend (one in
//!   the device) until the driver notifies the receive queue; nothing spins meanwhile;
//! * a corrupt ring (an available index that jumped, a used ring outside memory) or a malformed
//!   chain (a loop, a `next` past the table, a bad indirect table, a buffer outside guest
//!   memory: `crate::virtio::chain`) marks the device `DEVICE_NEEDS_RESET`, sends a
//!   configuration change notification and stops it until the driver resets it.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use crate::memory::GuestMemoryMmap;

use super::backend::NetBackend;
use super::device::NetCounters;
use super::{MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::virtio::chain::check_chain;
use crate::virtio::device::{HealthFlag, VirtioInterrupt};
use crate::virtio::report::{QueueReporter, RingError};
use crate::virtio::worker::QueueHandler;

/// The receive queue's index.
pub const RX_QUEUE: usize = 0;
/// The transmit queue's index.
pub const TX_QUEUE: usize = 1;
/// The worker's token for "the backend is readable".
pub const BACKEND_EVENT: usize = 2;

/// The backend as the device and its worker share it.
pub type SharedBackend = Arc<Mutex<Box<dyn NetBackend>>>;

/// Why queue processing stopped: the driver corrupted a ring or made a malformed chain.
pub type NetQueueError = RingError;

/// Both queues of a virtio-net device with the backend, run on the device's worker.
pub struct NetQueues {
    memory: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    backend: SharedBackend,
    report: QueueReporter,
    counters: Arc<NetCounters>,
    /// A received frame (header included) that is waiting for a receive buffer.
    rx_frame: Vec<u8>,
    rx_pending: Option<usize>,
    tx_frame: Vec<u8>,
}

impl std::fmt::Debug for NetQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetQueues")
            .field("rx", &self.rx)
            .field("tx", &self.tx)
            .field("rx_pending", &self.rx_pending)
            .finish()
    }
}

impl NetQueues {
    /// Handlers for `rx` and `tx` (a queue the driver did not enable is never touched).
    pub fn new(
        memory: GuestMemoryMmap,
        rx: Queue,
        tx: Queue,
        backend: SharedBackend,
        interrupt: Arc<dyn VirtioInterrupt>,
        health: HealthFlag,
        counters: Arc<NetCounters>,
    ) -> Self {
        NetQueues {
            memory,
            rx,
            tx,
            backend,
            report: QueueReporter::new("virtio-net", interrupt, health),
            counters,
            rx_frame: vec![0; MAX_FRAME_LEN],
            rx_pending: None,
            tx_frame: vec![0; MAX_FRAME_LEN],
        }
    }

    /// Sends every available transmit chain; returns how many chains were completed.
    pub fn process_tx(&mut self) -> Result<usize, NetQueueError> {
        if self.report.is_broken() || !self.tx.ready() {
            return Ok(0);
        }
        let result = self.send_available();
        self.report
            .finish(&mut self.tx, &self.memory, TX_QUEUE as u16, &result);
        result
    }

    fn send_available(&mut self) -> Result<usize, NetQueueError> {
        let mut done = 0;
        loop {
            // At most `size` chains per pass, each of at most `size` descriptors.
            let chains: Vec<_> = self
                .tx
                .iter(&self.memory)
                .map_err(|source| NetQueueError::AvailRing {
                    queue: TX_QUEUE,
                    source,
                })?
                .collect();
            if chains.is_empty() {
                return Ok(done);
            }
            let mut backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
            for chain in chains {
                let head = chain.head_index();
                check_chain(&chain, &self.memory).map_err(|source| NetQueueError::Chain {
                    queue: TX_QUEUE,
                    source,
                })?;
                let len = chain.reader(&self.memory).ok().and_then(|mut r| {
                    let len = r.available_bytes();
                    if !(VNET_HDR_LEN..=MAX_FRAME_LEN).contains(&len) {
                        return None;
                    }
                    r.read_exact(&mut self.tx_frame[..len]).ok()?;
                    Some(len)
                });
                match len {
                    Some(len) => {
                        // No offload was offered: whatever the guest put in the header's
                        // flags and GSO fields means nothing; send a plain frame.
                        self.tx_frame[..VNET_HDR_LEN].fill(0);
                        match backend.send(&self.tx_frame[..len]) {
                            Ok(()) => {
                                self.counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                                self.counters
                                    .tx_bytes
                                    .fetch_add((len - VNET_HDR_LEN) as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                log::debug!("virtio-net: backend refused a {len}-byte frame: {e}");
                                self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    None => {
                        self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.tx.add_used(&self.memory, head, 0).map_err(|source| {
                    NetQueueError::UsedRing {
                        queue: TX_QUEUE,
                        head,
                        source,
                    }
                })?;
                done += 1;
            }
        }
    }

    /// Moves frames from the backend into receive buffers while both exist; returns how many
    /// buffers were used.
    pub fn process_rx(&mut self) -> Result<usize, NetQueueError> {
        if self.report.is_broken() || !self.rx.ready() {
            return Ok(0);
        }
        let result = self.receive_available();
        self.report
            .finish(&mut self.rx, &self.memory, RX_QUEUE as u16, &result);
        result
    }

    /// Reads the next frame from the backend into `rx_frame` unless one is waiting already;
    /// false when the backend has none.
    fn fill_pending(&mut self) -> bool {
        if self.rx_pending.is_some() {
            return true;
        }
        let mut backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match backend.recv(&mut self.rx_frame) {
                Ok(n) if n >= VNET_HDR_LEN => {
                    // No offload was negotiated: a clean header with num_buffers = 1.
                    self.rx_frame[..VNET_HDR_LEN].fill(0);
                    self.rx_frame[10..VNET_HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
                    self.rx_pending = Some(n);
                    return true;
                }
                // A runt (or an empty read) carries no frame; look at the next one.
                Ok(_) => {
                    self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    log::warn!("virtio-net: reading from the backend: {e}");
                    return false;
                }
            }
        }
    }

    fn receive_available(&mut self) -> Result<usize, NetQueueError> {
        let mut done = 0;
        while self.fill_pending() {
            let Some(len) = self.rx_pending else { break };
            let chain = self
                .rx
                .iter(&self.memory)
                .map_err(|source| NetQueueError::AvailRing {
                    queue: RX_QUEUE,
                    source,
                })?
                .next();
            // No buffer: the frame waits here (and later ones in the backend) until the
            // driver notifies the receive queue.
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            check_chain(&chain, &self.memory).map_err(|source| NetQueueError::Chain {
                queue: RX_QUEUE,
                source,
            })?;
            let mut written = 0u32;
            match chain.writer(&self.memory) {
                Ok(mut w) if w.available_bytes() >= len => {
                    // A failed write (cannot happen for checked buffers) returns the buffer
                    // empty and keeps the frame.
                    let ok = w.write_all(&self.rx_frame[..len]).is_ok();
                    written = if ok { len as u32 } else { 0 };
                }
                Ok(w) if w.available_bytes() > 0 => {
                    // Too small for this frame: drop it rather than hold every buffer.
                    self.rx_pending = None;
                    self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
                }
                // No writable byte: return it empty and keep the frame.
                _ => {}
            }
            if written > 0 {
                self.rx_pending = None;
                self.counters.rx_frames.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .rx_bytes
                    .fetch_add((len - VNET_HDR_LEN) as u64, Ordering::Relaxed);
            }
            self.rx
                .add_used(&self.memory, head, written)
                .map_err(|source| NetQueueError::UsedRing {
                    queue: RX_QUEUE,
                    head,
                    source,
                })?;
            done += 1;
        }
        Ok(done)
    }
}

impl QueueHandler for NetQueues {
    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        vec![self.rx.state(), self.tx.state()]
    }

    fn handle_queue(&mut self, index: usize) {
        match index {
            TX_QUEUE => {
                let _ = self.process_tx();
            }
            RX_QUEUE | BACKEND_EVENT => {
                let _ = self.process_rx();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
