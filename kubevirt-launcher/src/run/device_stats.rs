//! The devices' counters for the `stats` request, kept by the machine across guest reboots
//! (each reboot builds new devices): per disk a [`Counted`] wrapper around its backend, per NIC
//! every [`NetCounters`] the VMM's devices ever had, summed.

use kubevirt_launcher_protocol::{DiskStats, InterfaceStats};
use kubevirt_vmm::virtio::block::{BackendError, BlockBackend, GuestBuffers};
use kubevirt_vmm::virtio::net::NetCounters;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Request and byte counters of one disk.
#[derive(Debug, Default)]
pub struct BlockCounters {
    read_bytes: AtomicU64,
    read_requests: AtomicU64,
    write_bytes: AtomicU64,
    write_requests: AtomicU64,
    flush_requests: AtomicU64,
}

impl BlockCounters {
    fn read(&self, bytes: usize) {
        self.read_requests.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn write(&self, bytes: usize) {
        self.write_requests.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self, name: &str) -> DiskStats {
        DiskStats {
            name: name.to_string(),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            read_requests: self.read_requests.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            write_requests: self.write_requests.load(Ordering::Relaxed),
            flush_requests: self.flush_requests.load(Ordering::Relaxed),
        }
    }
}

/// A disk backend that counts what the guest moves through it; everything else is the inner
/// backend's.
pub struct Counted {
    inner: Box<dyn BlockBackend>,
    counters: Arc<BlockCounters>,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("counters", &self.counters)
            .finish()
    }
}

impl Counted {
    /// Counts `inner`'s traffic in `counters`.
    pub fn new(inner: Box<dyn BlockBackend>, counters: Arc<BlockCounters>) -> Counted {
        Counted { inner, counters }
    }
}

fn total(bufs: &GuestBuffers<'_>) -> usize {
    bufs.iter().map(|b| b.len()).sum()
}

impl BlockBackend for Counted {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)?;
        self.counters.read(buf.len());
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)?;
        self.counters.write(buf.len());
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()?;
        self.counters.flush_requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn has_volatile_cache(&self) -> bool {
        self.inner.has_volatile_cache()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.write_zeroes(offset, len)
    }
    fn inactivate(&mut self) -> Result<(), BackendError> {
        self.inner.inactivate()
    }
    fn activate(&mut self) -> Result<(), BackendError> {
        self.inner.activate()
    }
    fn read_to_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        self.inner.read_to_guest(bufs, offset)?;
        self.counters.read(total(bufs));
        Ok(())
    }
    fn write_from_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        self.inner.write_from_guest(bufs, offset)?;
        self.counters.write(total(bufs));
        Ok(())
    }
}

/// Every device counter of one machine.
#[derive(Debug, Default)]
pub struct DeviceStats {
    disks: Mutex<Vec<(String, Arc<BlockCounters>)>>,
    nics: Mutex<Vec<Arc<NetCounters>>>,
}

impl DeviceStats {
    /// The counters of disk `name` (made on first use; the same for every VM the machine
    /// builds).
    pub fn disk(&self, name: &str) -> Arc<BlockCounters> {
        let mut disks = self.disks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = disks.iter().find(|(n, _)| n == name) {
            return c.clone();
        }
        let c = Arc::new(BlockCounters::default());
        disks.push((name.to_string(), c.clone()));
        c
    }

    /// Adds the counters of a NIC just built (one per VM the machine builds).
    pub fn add_nic(&self, counters: Arc<NetCounters>) {
        self.nics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(counters);
    }

    /// Each disk's counters.
    pub fn disks(&self) -> Vec<DiskStats> {
        let disks = self.disks.lock().unwrap_or_else(PoisonError::into_inner);
        disks.iter().map(|(n, c)| c.snapshot(n)).collect()
    }

    /// The NIC's counters summed over every VM so far, as interface `name`; `None` without
    /// a NIC.
    pub fn interface(&self, name: &str) -> Option<InterfaceStats> {
        let nics = self.nics.lock().unwrap_or_else(PoisonError::into_inner);
        if nics.is_empty() {
            return None;
        }
        let mut s = InterfaceStats {
            name: name.to_string(),
            ..InterfaceStats::default()
        };
        for c in nics.iter() {
            let (rx_frames, rx_dropped, tx_frames, tx_dropped) = c.frames();
            s.rx_packets += rx_frames;
            s.rx_dropped += rx_dropped;
            s.tx_packets += tx_frames;
            s.tx_dropped += tx_dropped;
            s.rx_bytes += c.rx_bytes.load(Ordering::Relaxed);
            s.tx_bytes += c.tx_bytes.load(Ordering::Relaxed);
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Zeroes;
    impl BlockBackend for Zeroes {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&mut self, buf: &mut [u8], _: u64) -> io::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn write_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn discard(&mut self, _: u64, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn write_zeroes(&mut self, _: u64, _: u64) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_disk_counts_requests_and_bytes_across_rebuilt_backends() {
        let stats = DeviceStats::default();
        for _ in 0..2 {
            let mut d = Counted::new(Box::new(Zeroes), stats.disk("root"));
            d.read_at(&mut [0; 512], 0).unwrap();
            d.write_at(&[1; 4096], 0).unwrap();
            d.flush().unwrap();
        }
        assert_eq!(
            stats.disks(),
            vec![DiskStats {
                name: "root".into(),
                read_bytes: 1024,
                read_requests: 2,
                write_bytes: 8192,
                write_requests: 2,
                flush_requests: 2,
            }]
        );
    }

    #[test]
    fn nic_counters_of_every_vm_are_summed() {
        let stats = DeviceStats::default();
        assert_eq!(stats.interface("default"), None);
        for n in [100, 50] {
            let c = Arc::new(NetCounters::default());
            c.rx_bytes.store(n, Ordering::Relaxed);
            c.tx_frames.store(1, Ordering::Relaxed);
            stats.add_nic(c);
        }
        let s = stats.interface("default").unwrap();
        assert_eq!((s.rx_bytes, s.tx_packets), (150, 2));
    }
}
