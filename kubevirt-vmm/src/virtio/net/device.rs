//! The virtio-net device: configuration space (MAC, link status), features, and a worker
//! thread per activation that waits on both queues and the backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::backend::NetBackend;
use super::queues::{NetQueues, RX_QUEUE, SharedBackend, TX_QUEUE};
use super::{
    QUEUE_SIZE, VIRTIO_ID_NET, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use crate::bus::DeviceStateError;
use crate::virtio::VIRTIO_RING_F_INDIRECT_DESC;
use crate::virtio::device::{
    ActivateContext, ActivateError, VirtioDevice, pause_worker, read_config_bytes, resume_worker,
};
use crate::virtio::worker::Worker;

/// Length of `struct virtio_net_config` as this device fills it: `mac`, `status`,
/// `max_virtqueue_pairs`.
pub const CONFIG_LEN: usize = 10;

/// What a virtio-net device is made of.
pub struct NetConfig {
    /// The guest's MAC address (KubeVirt's `interface.macAddress`).
    pub mac: [u8; 6],
    /// Where frames go: a [`super::Tap`], or another [`NetBackend`].
    pub backend: Box<dyn NetBackend>,
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("mac", &format_args!("{}", format_mac(&self.mac)))
            .field("backend", &self.backend)
            .finish()
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Frame and byte counters of one device (payload bytes, headers excluded), shared with the
/// embedding program.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Bytes delivered to the guest.
    pub rx_bytes: AtomicU64,
    /// Frames from the backend that no guest buffer could hold.
    pub rx_dropped: AtomicU64,
    /// Frames the guest sent that reached the backend.
    pub tx_frames: AtomicU64,
    /// Bytes the guest sent that reached the backend.
    pub tx_bytes: AtomicU64,
    /// Transmit chains dropped: malformed, oversized, or refused by the backend.
    pub tx_dropped: AtomicU64,
}

impl NetCounters {
    /// (rx_frames, rx_dropped, tx_frames, tx_dropped), read relaxed.
    pub fn frames(&self) -> (u64, u64, u64, u64) {
        (
            self.rx_frames.load(Ordering::Relaxed),
            self.rx_dropped.load(Ordering::Relaxed),
            self.tx_frames.load(Ordering::Relaxed),
            self.tx_dropped.load(Ordering::Relaxed),
        )
    }
}

/// A virtio-net NIC.
pub struct Net {
    mac: [u8; 6],
    backend: SharedBackend,
    config: [u8; CONFIG_LEN],
    counters: Arc<NetCounters>,
    worker: Option<Worker<NetQueues>>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("mac", &format_args!("{}", format_mac(&self.mac)))
            .field("active", &self.worker.is_some())
            .finish()
    }
}

impl Net {
    /// A NIC with `config.mac` on `config.backend`, link up.
    pub fn new(config: NetConfig) -> Net {
        let mut space = [0u8; CONFIG_LEN];
        space[..6].copy_from_slice(&config.mac);
        space[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        space[8..10].copy_from_slice(&1u16.to_le_bytes());
        Net {
            mac: config.mac,
            backend: Arc::new(Mutex::new(config.backend)),
            config: space,
            counters: Arc::new(NetCounters::default()),
            worker: None,
        }
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The device's counters (they live on across resets).
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_RING_F_INDIRECT_DESC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        let ActivateContext {
            memory,
            queues,
            interrupt,
            health,
            ..
        } = context;
        let mut queues = queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueNotReady(TX_QUEUE));
        };
        use virtio_queue::QueueT;
        // A driver may transmit only or receive only, but a NIC with neither is a mistake.
        if !rx.queue.ready() && !tx.queue.ready() {
            return Err(ActivateError::QueueNotReady(RX_QUEUE));
        }
        let fd = self
            .backend
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rx_fd();
        let handler = NetQueues::new(
            memory,
            rx.queue,
            tx.queue,
            self.backend.clone(),
            interrupt,
            health,
            self.counters.clone(),
        );
        self.worker = Some(
            Worker::spawn_with_fds(
                "virtio-net".into(),
                vec![rx.event, tx.event],
                &[fd],
                handler,
            )
            .map_err(ActivateError::Worker)?,
        );
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops its thread; the backend stays with the device. A frame
        // held for a receive buffer is lost with it, as on a real NIC reset.
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
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::time::{Duration, Instant};

    use crate::memory::GuestMemoryMmap;
    use virtio_queue::Queue;
    use virtio_queue::desc::split::Descriptor;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::virtio::device::{DeviceQueue, HealthFlag};
    use crate::virtio::net::VNET_HDR_LEN;
    use crate::virtio::test_utils::NoInterrupt;

    /// One end of a non-blocking `SOCK_SEQPACKET` pair: one frame per datagram, like a tap.
    struct SeqPacket(OwnedFd);

    fn seqpacket_pair() -> (SeqPacket, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two new descriptors into `fds`, which has room for them.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: both descriptors were just created and are owned by nothing else.
        unsafe {
            (
                SeqPacket(OwnedFd::from_raw_fd(fds[0])),
                OwnedFd::from_raw_fd(fds[1]),
            )
        }
    }

    impl NetBackend for SeqPacket {
        fn rx_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
        fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }
        fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
            // SAFETY: the kernel reads at most `frame.len()` bytes from `frame`.
            let n =
                unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }

    fn queue(base: u64) -> Queue {
        crate::virtio::test_utils::ready_queue(16, base, base + 0x1000, base + 0x2000)
    }

    fn wait_used(mem: &GuestMemoryMmap, base: u64, want: u16) {
        let start = Instant::now();
        while mem.read_obj::<u16>(GuestAddress(base + 0x2002)).unwrap() < want {
            assert!(start.elapsed() < Duration::from_secs(5), "used index stuck");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn config_space_holds_the_mac_and_link_up() {
        let (backend, _peer) = seqpacket_pair();
        let net = Net::new(NetConfig {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            backend: Box::new(backend),
        });
        let mut cfg = [0u8; CONFIG_LEN];
        net.read_config(0, &mut cfg);
        assert_eq!(cfg, [0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, 1, 0]);
        assert_eq!(net.device_type(), 1);
        assert_eq!(
            net.features() & (VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS),
            (1 << 5) | (1 << 16)
        );
        assert_eq!(
            format!("{net:?}"),
            "Net { mac: 52:54:00:12:34:56, active: false }"
        );
    }

    /// Through the real worker: a frame that arrives before any receive buffer is neither lost
    /// nor spun on; it is delivered once the driver offers a buffer and notifies.
    #[test]
    fn the_worker_holds_early_frames_until_the_rx_notify_and_sends_on_tx_notify() {
        let (backend, peer) = seqpacket_pair();
        let mut net = Net::new(NetConfig {
            mac: [2, 0, 0, 0, 0, 1],
            backend: Box::new(backend),
        });
        let counters = net.counters();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let rx_event = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let tx_event = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (rx_kick, tx_kick) = (rx_event.try_clone().unwrap(), tx_event.try_clone().unwrap());
        net.activate(ActivateContext {
            memory: mem.clone(),
            queues: vec![
                DeviceQueue {
                    queue: queue(0x1000),
                    event: rx_event,
                },
                DeviceQueue {
                    queue: queue(0x4000),
                    event: tx_event,
                },
            ],
            interrupt: Arc::new(NoInterrupt),
            health: HealthFlag::default(),
            acked_features: 0,
        })
        .unwrap();

        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(b"early frame, no buffer yet");
        for _ in 0..2 {
            // SAFETY: send reads `frame.len()` bytes from `frame`.
            let n = unsafe { libc::send(peer.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(n as usize, frame.len());
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(counters.frames().0, 0, "no buffer, nothing delivered");
        for i in 0..2u16 {
            mem.write_obj(
                Descriptor::new(0x1_0000 + 0x1000 * u64::from(i), 2048, 2, 0),
                GuestAddress(0x1000 + 16 * u64::from(i)),
            )
            .unwrap();
            mem.write_obj(i, GuestAddress(0x2004 + 2 * u64::from(i)))
                .unwrap();
        }
        mem.write_obj(2u16, GuestAddress(0x2002)).unwrap();
        rx_kick.write(1).unwrap();
        wait_used(&mem, 0x1000, 2);
        let len: u32 = mem.read_obj(GuestAddress(0x3008)).unwrap();
        assert_eq!(len as usize, frame.len());

        mem.write_slice(&frame, GuestAddress(0x2_0000)).unwrap();
        mem.write_obj(
            Descriptor::new(0x2_0000, frame.len() as u32, 0, 0),
            GuestAddress(0x4000),
        )
        .unwrap();
        mem.write_obj(0u16, GuestAddress(0x5004)).unwrap();
        mem.write_obj(1u16, GuestAddress(0x5002)).unwrap();
        tx_kick.write(1).unwrap();
        wait_used(&mem, 0x4000, 1);
        let mut got = vec![0u8; 256];
        // SAFETY: recv writes at most `got.len()` bytes into `got`.
        let n = unsafe { libc::recv(peer.as_raw_fd(), got.as_mut_ptr().cast(), got.len(), 0) };
        assert_eq!(&got[..n as usize], &frame[..]);
        assert_eq!(counters.frames(), (2, 0, 1, 0));
        net.reset();
    }
}
