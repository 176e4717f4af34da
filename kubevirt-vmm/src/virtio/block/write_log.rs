//! Which parts of a disk the guest wrote while a live migration copies the disk: a bitmap of
//! [`TRACK_CHUNK`]-byte chunks, the disk's analogue of KVM's dirty log (QEMU's dirty bitmap
//! for block migration). Every [`super::Block`] wraps its backend in [`Tracked`], which marks
//! the chunks each write, discard or write-zeroes touches while tracking is on; off, a write
//! costs one atomic load.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::backend::{BackendError, BlockBackend, GuestBuffers};

/// Bytes one bit of the log stands for (qcow2's default cluster size).
pub const TRACK_CHUNK: u64 = 64 << 10;

/// The chunks of one disk written since tracking started or the log was last taken.
#[derive(Debug)]
pub struct WriteLog {
    on: AtomicBool,
    bits: Mutex<Vec<u64>>,
    chunks: u64,
}

impl WriteLog {
    /// A log for a disk of `size` bytes, off.
    pub fn new(size: u64) -> WriteLog {
        let chunks = size.div_ceil(TRACK_CHUNK);
        WriteLog {
            on: AtomicBool::new(false),
            bits: Mutex::new(vec![0; chunks.div_ceil(64) as usize]),
            chunks,
        }
    }

    /// Starts tracking with nothing marked.
    pub fn start(&self) {
        let mut bits = self.bits.lock().unwrap_or_else(PoisonError::into_inner);
        bits.iter_mut().for_each(|w| *w = 0);
        self.on.store(true, Ordering::SeqCst);
    }

    /// Stops tracking.
    pub fn stop(&self) {
        self.on.store(false, Ordering::SeqCst);
    }

    /// Whether tracking is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Marks the chunks `[offset, offset + len)` touches, if tracking is on.
    pub fn mark(&self, offset: u64, len: u64) {
        if len == 0 || !self.on.load(Ordering::SeqCst) {
            return;
        }
        let first = offset / TRACK_CHUNK;
        if first >= self.chunks {
            return;
        }
        let last = ((offset.saturating_add(len) - 1) / TRACK_CHUNK).min(self.chunks - 1);
        let mut bits = self.bits.lock().unwrap_or_else(PoisonError::into_inner);
        for c in first..=last {
            bits[(c / 64) as usize] |= 1 << (c % 64);
        }
    }

    /// The chunks marked (their indices, ascending), clearing them.
    pub fn take(&self) -> Vec<u64> {
        let mut bits = self.bits.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (i, w) in bits.iter_mut().enumerate() {
            let mut word = std::mem::take(w);
            while word != 0 {
                let b = u64::from(word.trailing_zeros());
                out.push(i as u64 * 64 + b);
                word &= word - 1;
            }
        }
        out
    }
}

/// A backend whose writes are logged in a [`WriteLog`] while a migration tracks them.
pub(crate) struct Tracked {
    inner: Box<dyn BlockBackend>,
    log: Arc<WriteLog>,
}

impl Tracked {
    /// Wraps `inner`; returns the wrapper and its log.
    pub(crate) fn wrap(inner: Box<dyn BlockBackend>) -> (Tracked, Arc<WriteLog>) {
        let log = Arc::new(WriteLog::new(inner.size()));
        (
            Tracked {
                inner,
                log: log.clone(),
            },
            log,
        )
    }
}

fn total(bufs: &GuestBuffers<'_>) -> u64 {
    bufs.iter().map(|b| b.len() as u64).sum()
}

impl BlockBackend for Tracked {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        // Marked even if it fails part-way: some bytes may have changed.
        self.log.mark(offset, buf.len() as u64);
        self.inner.write_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn has_volatile_cache(&self) -> bool {
        self.inner.has_volatile_cache()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.log.mark(offset, len);
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.log.mark(offset, len);
        self.inner.write_zeroes(offset, len)
    }
    fn inactivate(&mut self) -> Result<(), BackendError> {
        self.inner.inactivate()
    }
    fn activate(&mut self) -> Result<(), BackendError> {
        self.inner.activate()
    }
    fn allocated_extents(&mut self) -> io::Result<Vec<(u64, u64)>> {
        self.inner.allocated_extents()
    }
    fn read_to_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        self.inner.read_to_guest(bufs, offset)
    }
    fn write_from_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        self.log.mark(offset, total(bufs));
        self.inner.write_from_guest(bufs, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_mark_their_chunks_only_while_tracking() {
        let log = WriteLog::new(10 * TRACK_CHUNK + 512);
        log.mark(0, 4096);
        assert!(log.take().is_empty(), "off: nothing is marked");
        log.start();
        log.mark(TRACK_CHUNK - 512, 1024); // straddles chunks 0 and 1
        log.mark(5 * TRACK_CHUNK, TRACK_CHUNK); // exactly chunk 5
        log.mark(10 * TRACK_CHUNK, 512); // the partial last chunk
        log.mark(3 * TRACK_CHUNK, 0);
        assert_eq!(log.take(), vec![0, 1, 5, 10]);
        assert!(log.take().is_empty(), "taking clears");
        log.mark(10 * TRACK_CHUNK, u64::MAX); // clamped to the disk
        log.mark(u64::MAX - 10, 100); // past the end: nothing (requests are checked before)
        assert_eq!(log.take(), vec![10]);
        log.stop();
        log.mark(0, 1);
        assert!(log.take().is_empty());
    }
}
