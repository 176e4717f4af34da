//! Where a virtio-blk disk's bytes live: the [`BlockBackend`] trait (raw files are in `raw`,
//! qcow2 images in `qcow2`).

use std::io;
use std::path::PathBuf;

use crate::memory::GuestSlice;
use vm_memory::bitmap::Bitmap;

/// Guest buffers of one request, in order (checked guest-memory slices).
pub type GuestBuffers<'a> = [GuestSlice<'a>];

/// Bytes a default (bounce-buffered) vectored transfer moves at a time.
const BOUNCE_CHUNK: usize = 128 << 10;
/// Most iovecs one `preadv`/`pwritev` takes (Linux `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// A disk image: byte-addressed reads and writes plus the block-device extras. qcow2 and
/// other formats implement this too.
pub trait BlockBackend: Send {
    /// The disk size in bytes.
    fn size(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Fills `buf` from `offset` (within [`BlockBackend::size`]).
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (the guest's flush).
    fn flush(&mut self) -> io::Result<()>;
    /// Whether completed writes may sit in a volatile cache until [`BlockBackend::flush`]:
    /// then the device offers `VIRTIO_BLK_F_FLUSH`. Default true; a write-through backend
    /// (every write durable when it completes) says false.
    fn has_volatile_cache(&self) -> bool {
        true
    }
    /// The guest no longer needs `[offset, offset + len)`; its contents become unspecified.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// `[offset, offset + len)` reads as zeroes afterwards.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Live migration's lock handover (see `lock.rs`): gives up the image's write lock; the
    /// caller has flushed and writes nothing until [`BlockBackend::activate`]. Default: no
    /// lock to give up.
    ///
    /// # Errors
    /// When the lock cannot be changed.
    fn inactivate(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// The ranges `(offset, len)` of the disk this image holds data for itself (not holes,
    /// not what a backing file provides), ascending: what a copy of the disk over the same
    /// base must carry. Default: the whole disk.
    ///
    /// # Errors
    /// When the image's allocation cannot be read.
    fn allocated_extents(&mut self) -> io::Result<Vec<(u64, u64)>> {
        Ok(vec![(0, self.size())])
    }

    /// Takes the lock the image is opened for (exclusive when writable), after an inactive
    /// open or [`BlockBackend::inactivate`]. Default: no lock to take.
    ///
    /// # Errors
    /// [`BackendError::InUse`] naming the image when another VM holds it.
    fn activate(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Fills the guest buffers `bufs`, in order, from `offset` (a read request's data). The
    /// default goes through a bounce buffer and [`BlockBackend::read_at`]; file backends
    /// read straight into guest memory.
    fn read_to_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        let mut bounce = vec![0u8; BOUNCE_CHUNK];
        let mut offset = offset;
        for b in bufs {
            let mut done = 0;
            while done < b.len() {
                let n = (b.len() - done).min(BOUNCE_CHUNK);
                self.read_at(&mut bounce[..n], offset)?;
                b.offset(done)
                    .map_err(io::Error::other)?
                    .copy_from(&bounce[..n]);
                done += n;
                offset += n as u64;
            }
        }
        Ok(())
    }

    /// Writes the guest buffers `bufs`, in order, at `offset` (a write request's data). The
    /// default goes through a bounce buffer and [`BlockBackend::write_at`].
    fn write_from_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        let mut bounce = vec![0u8; BOUNCE_CHUNK];
        let mut offset = offset;
        for b in bufs {
            let mut done = 0;
            while done < b.len() {
                let n = (b.len() - done).min(BOUNCE_CHUNK);
                b.offset(done)
                    .map_err(io::Error::other)?
                    .copy_to(&mut bounce[..n]);
                self.write_at(&bounce[..n], offset)?;
                done += n;
                offset += n as u64;
            }
        }
        Ok(())
    }
}

/// `preadv`/`pwritev` of `fd` at `offset` straight to or from guest buffers, until every byte
/// moved (short transfers continue where they stopped; end of file is an error).
pub(crate) fn transfer_vectored(
    fd: i32,
    bufs: &GuestBuffers<'_>,
    mut offset: u64,
    write: bool,
) -> io::Result<()> {
    // The guards keep the slices' pointers valid while the kernel uses them.
    let guards: Vec<_> = bufs
        .iter()
        .map(|b| {
            if !write {
                b.bitmap().mark_dirty(0, b.len());
            }
            (b.ptr_guard_mut(), b.len())
        })
        .collect();
    let mut iovs: Vec<libc::iovec> = guards
        .iter()
        .filter(|(_, len)| *len > 0)
        .map(|(g, len)| libc::iovec {
            iov_base: g.as_ptr().cast(),
            iov_len: *len,
        })
        .collect();
    let mut first = 0;
    while first < iovs.len() {
        let batch = &iovs[first..iovs.len().min(first + MAX_IOVECS)];
        let off =
            i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: every iovec points into a guest-memory slice whose mapping the guards keep
        // alive and whose length is the slice's; the kernel reads (pwritev) or writes (preadv)
        // only within them. The guest may touch the same memory concurrently: that is the
        // volatile-access contract of guest memory, not Rust-visible aliasing.
        let n = unsafe {
            if write {
                libc::pwritev(fd, batch.as_ptr(), batch.len() as i32, off)
            } else {
                libc::preadv(fd, batch.as_ptr(), batch.len() as i32, off)
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        offset += n as u64;
        let mut left = n as usize;
        while left > 0 && first < iovs.len() {
            let iov = &mut iovs[first];
            if left >= iov.iov_len {
                left -= iov.iov_len;
                first += 1;
            } else {
                // SAFETY: `left < iov_len`, so the advanced pointer stays inside the slice.
                iov.iov_base = unsafe { iov.iov_base.cast::<u8>().add(left).cast() };
                iov.iov_len -= left;
                left = 0;
            }
        }
    }
    Ok(())
}


/// Why a disk image cannot be used. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The file does not open.
    #[error(
        "cannot open disk image {path} {mode}: {source} (does it exist, and may this process {mode_verb} it?)"
    )]
    Open {
        /// The image.
        path: PathBuf,
        /// "read-only" or "read-write".
        mode: &'static str,
        /// "read" or "read and write".
        mode_verb: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another VM (or another disk of this VM) holds the image: two guests writing one disk
    /// would corrupt it.
    #[error(
        "disk image {path} is in use by another VM ({held}): stop that VM first, or make the disk read-only in both"
    )]
    InUse {
        /// The image.
        path: PathBuf,
        /// What this open needed.
        held: &'static str,
    },
    /// Locking the image failed for another reason than a conflict.
    #[error("cannot lock disk image {path}: {source}")]
    Lock {
        /// The image.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file or block device.
    #[error("disk image {0} is not a regular file or block device")]
    NotAFile(PathBuf),
    /// The size could not be determined or is not a whole number of 512-byte sectors.
    #[error("disk image {path} is {size} bytes: a disk must be a non-zero multiple of 512 bytes")]
    Size {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Reading the size failed.
    #[error("cannot determine the size of disk image {path}: {source}")]
    Stat {
        /// The image.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}
