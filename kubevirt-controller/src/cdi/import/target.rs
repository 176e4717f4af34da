//! Where the import writes: a Filesystem claim's directory (`<dir>/disk.img`, CDI's
//! `/data/disk.img`) or a Block claim's device (CDI's `/dev/cdi-block-volume`), and how large the
//! disk may be there.
//!
//! On a Filesystem claim the disk gets the requested size (or the free space, if smaller) less
//! the filesystem overhead, rounded down to 1 MiB, as upstream's `GetUsableSpace`. The disk is
//! written under a temporary name and renamed to `disk.img` only once complete, so a
//! `disk.img` is always a finished import.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The disk's name in a Filesystem claim.
pub const DISK_IMAGE_NAME: &str = "disk.img";
/// Upstream's default share of a Filesystem volume kept free for the filesystem (CDIConfig
/// `filesystemOverhead.global`).
pub const DEFAULT_FILESYSTEM_OVERHEAD: f64 = 0.055;
/// Disk sizes on a filesystem are multiples of this.
pub const ALIGNMENT: u64 = 1 << 20;
/// The name a disk is written under until it is complete.
pub const PENDING_NAME: &str = ".disk.img.importing";
/// A scratch file's name.
pub const SCRATCH_NAME: &str = ".importer-scratch";
/// Where a registry import copies the disk out of the image's layers (plus suffixes while it
/// is written).
pub const REGISTRY_DISK_NAME: &str = ".importer-registry-disk";

/// Removes what an interrupted import leaves in `dir` (a half-written disk, a scratch file, a
/// half-unpacked archive); never `disk.img`.
pub fn remove_leftovers(dir: &Path) {
    for name in [PENDING_NAME, SCRATCH_NAME] {
        let _ = fs::remove_file(dir.join(name));
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(REGISTRY_DISK_NAME)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
    let _ = fs::remove_dir_all(dir.join(super::archive::STAGING));
}

/// The claim being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Filesystem volume mounted at this directory.
    Filesystem {
        /// The directory.
        dir: PathBuf,
    },
    /// A Block volume: this device.
    Block {
        /// The device (or, in tests, any file standing for one).
        device: PathBuf,
    },
}

/// How many bytes the disk may have, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// The size in bytes.
    pub bytes: u64,
    /// How it came about, for error messages.
    pub explanation: String,
}

impl Target {
    /// A pod's claim as upstream's importer and upload server find it: Block when the device
    /// path exists, else the Filesystem volume mounted at `data_dir`.
    pub fn of_pod(block_device: &Path, data_dir: &Path) -> Target {
        if block_device.exists() {
            Target::Block {
                device: block_device.to_path_buf(),
            }
        } else {
            Target::Filesystem {
                dir: data_dir.to_path_buf(),
            }
        }
    }
}

/// Failures of the target.
#[derive(Debug, Error)]
pub enum TargetError {
    /// The directory or device is unusable.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Nothing fits.
    #[error("the target has no room for a disk: {0}")]
    NoRoom(String),
    /// The overhead is not a fraction.
    #[error(
        "filesystem overhead {0} is not a fraction between 0 and 1 (upstream's default is 0.055)"
    )]
    BadOverhead(f64),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TargetError {
    let path = path.to_path_buf();
    move |source| TargetError::Io { what, path, source }
}

impl Target {
    /// The room for the disk: `requested` bytes (all the space there is, if `None`) capped by
    /// what the target holds; on a filesystem, less `overhead` (a fraction) and rounded down to
    /// [`ALIGNMENT`].
    pub fn capacity(&self, requested: Option<u64>, overhead: f64) -> Result<Capacity, TargetError> {
        match self {
            Target::Filesystem { dir } => {
                if !(0.0..1.0).contains(&overhead) {
                    return Err(TargetError::BadOverhead(overhead));
                }
                let stat = rustix::fs::statvfs(dir)
                    .map_err(|e| io_err("reading the free space of", dir)(e.into()))?;
                let free = stat.f_bavail.saturating_mul(stat.f_frsize);
                let (base, from) = match requested {
                    Some(r) if r <= free => (r, "the requested size"),
                    _ => (free, "the free space of the volume"),
                };
                let bytes = usable_space(base, overhead);
                let explanation = format!(
                    "{base} bytes, {from}, less {}% filesystem overhead, rounded down to 1 MiB",
                    overhead * 100.0
                );
                if bytes == 0 {
                    return Err(TargetError::NoRoom(explanation));
                }
                Ok(Capacity { bytes, explanation })
            }
            Target::Block { device } => {
                let size = device_size(device)?;
                let (bytes, explanation) = match requested {
                    Some(r) if r < size => {
                        (r, format!("the requested size; the device holds {size}"))
                    }
                    _ => (
                        size,
                        format!("the size of the block device {}", device.display()),
                    ),
                };
                if bytes == 0 {
                    return Err(TargetError::NoRoom(explanation));
                }
                Ok(Capacity { bytes, explanation })
            }
        }
    }

    /// Where the finished disk is.
    pub fn disk_path(&self) -> PathBuf {
        match self {
            Target::Filesystem { dir } => dir.join(DISK_IMAGE_NAME),
            Target::Block { device } => device.clone(),
        }
    }
}

/// Upstream's `GetUsableSpace`: `ceil((1 - overhead) × size)` rounded down to [`ALIGNMENT`].
pub fn usable_space(size: u64, overhead: f64) -> u64 {
    let usable = ((1.0 - overhead) * size as f64).ceil();
    // `as` saturates; the product never exceeds `size`.
    let usable = (usable as u64).min(size);
    usable / ALIGNMENT * ALIGNMENT
}

/// The size of a block device (or a regular file standing for one).
pub fn device_size(device: &Path) -> Result<u64, TargetError> {
    let mut f = File::open(device).map_err(io_err("opening", device))?;
    f.seek(SeekFrom::End(0))
        .map_err(io_err("reading the size of", device))
}

/// `BLKZEROOUT`: `_IO(0x12, 127)`, zero a byte range of a block device.
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// Makes the first `len` bytes of `device` read as zeros, as upstream zeroes a blank Block
/// volume (a device may hold an earlier tenant's data): the kernel's `BLKZEROOUT` (which a
/// loop device turns into holes), else written zeros.
pub fn zero_device(device: &Path, len: u64) -> Result<(), TargetError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(io_err("opening", device))?;
    let range: [u64; 2] = [0, len];
    // SAFETY: `file` is an open descriptor for the call's duration and `range` is the
    // `[start, length]` pair of u64 that BLKZEROOUT reads; the kernel does not keep the pointer.
    let zeroed = unsafe { libc::ioctl(file.as_raw_fd(), BLKZEROOUT, range.as_ptr()) } == 0;
    if !zeroed {
        let zeros = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], pos)
                .map_err(io_err("zeroing", device))?;
            pos += n as u64;
        }
    }
    file.sync_all().map_err(io_err("flushing", device))
}

/// A disk being written into a Filesystem claim: removed on drop unless [`PendingDisk::commit`]
/// renamed it to `disk.img`.
#[derive(Debug)]
pub struct PendingDisk {
    dir: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl PendingDisk {
    /// Starts a disk in `dir`: a `disk.img`, half-written disk or scratch file from an earlier
    /// attempt is removed first, so that no `disk.img` exists unless this import completes.
    pub fn start(dir: &Path) -> Result<PendingDisk, TargetError> {
        let path = dir.join(PENDING_NAME);
        for stale in [&path, &dir.join(DISK_IMAGE_NAME), &dir.join(SCRATCH_NAME)] {
            match fs::remove_file(stale) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("removing", stale)(e));
                }
                _ => {}
            }
        }
        Ok(PendingDisk {
            dir: dir.to_path_buf(),
            path,
            committed: false,
        })
    }

    /// The temporary path being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating) the temporary file for writing.
    pub fn open(&self) -> Result<File, TargetError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(io_err("creating", &self.path))
    }

    /// Grows (sparsely) the disk to `size` bytes if smaller, as upstream resizes after
    /// importing; with `preallocate`, allocates every block too.
    pub fn finish_size(&self, size: u64, preallocate: bool) -> Result<(), TargetError> {
        let f = self.open()?;
        let len = f.metadata().map_err(io_err("reading", &self.path))?.len();
        if len < size {
            f.set_len(size).map_err(io_err("resizing", &self.path))?;
        }
        if preallocate {
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, size.max(len))
                .map_err(|e| io_err("preallocating", &self.path)(e.into()))?;
        }
        Ok(())
    }

    /// Flushes the disk and renames it to `disk.img`.
    pub fn commit(mut self) -> Result<PathBuf, TargetError> {
        self.open()?
            .sync_all()
            .map_err(io_err("flushing", &self.path))?;
        let done = self.dir.join(DISK_IMAGE_NAME);
        fs::rename(&self.path, &done).map_err(io_err("renaming", &self.path))?;
        self.committed = true;
        // The rename itself, durable.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("flushing", &self.dir))?;
        Ok(done)
    }
}

impl Drop for PendingDisk {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A scratch file (a download waiting for `qemu-img convert`), removed on drop.
#[derive(Debug)]
pub struct ScratchFile(PathBuf);

impl ScratchFile {
    /// A scratch file in `dir` (replacing a leftover of the same name).
    pub fn create(dir: &Path) -> Result<(ScratchFile, File), TargetError> {
        let path = dir.join(SCRATCH_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err("creating the scratch file", &path))?;
        Ok((ScratchFile(path), file))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn usable_space_is_upstreams() {
        // 1 GiB less 5.5 % = 967.68 MiB → 967 MiB.
        assert_eq!(usable_space(1 << 30, 0.055), 967 * MIB);
        assert_eq!(usable_space(64 * MIB, 0.0), 64 * MIB);
        assert_eq!(usable_space(MIB - 1, 0.0), 0);
    }

    #[test]
    fn filesystem_capacity_takes_the_request_less_overhead() {
        let dir = kubevirt_testsupport::tempdir("cap");
        let t = Target::Filesystem {
            dir: dir.to_path_buf(),
        };
        let c = t.capacity(Some(100 * MIB), 0.055).unwrap();
        assert_eq!(c.bytes, 94 * MIB);
        assert!(
            c.explanation.contains("5.5% filesystem overhead"),
            "{}",
            c.explanation
        );
        assert!(t.capacity(None, 0.0).unwrap().bytes > 0);
        assert!(matches!(
            t.capacity(Some(MIB), 1.5),
            Err(TargetError::BadOverhead(_))
        ));
        assert!(matches!(
            t.capacity(Some(MIB / 2), 0.0),
            Err(TargetError::NoRoom(_))
        ));
    }

    #[test]
    fn block_capacity_is_the_device_size() {
        let dir = kubevirt_testsupport::tempdir("cap");
        let dev = dir.join("dev");
        File::create(&dev).unwrap().set_len(8 * MIB).unwrap();
        let t = Target::Block { device: dev };
        assert_eq!(t.capacity(None, 0.5).unwrap().bytes, 8 * MIB);
        assert_eq!(t.capacity(Some(MIB), 0.5).unwrap().bytes, MIB);
    }

    #[test]
    fn a_pending_disk_is_removed_unless_committed() {
        let dir = kubevirt_testsupport::tempdir("pending");
        std::fs::write(dir.join(DISK_IMAGE_NAME), b"old").unwrap();
        let p = PendingDisk::start(&dir).unwrap();
        assert!(
            !dir.join(DISK_IMAGE_NAME).exists(),
            "a stale disk.img is removed"
        );
        std::fs::write(p.path(), b"half").unwrap();
        drop(p);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

        let p = PendingDisk::start(&dir).unwrap();
        std::fs::write(p.path(), b"data").unwrap();
        p.finish_size(4096, false).unwrap();
        let done = p.commit().unwrap();
        assert_eq!(std::fs::metadata(&done).unwrap().len(), 4096);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn a_file_standing_for_a_device_is_zeroed_by_writing() {
        let dir = kubevirt_testsupport::tempdir("zero");
        let dev = dir.join("dev");
        std::fs::write(&dev, vec![0xaau8; 3 * MIB as usize]).unwrap();
        zero_device(&dev, 2 * MIB).unwrap();
        let data = std::fs::read(&dev).unwrap();
        assert!(data[..2 * MIB as usize].iter().all(|b| *b == 0));
        assert!(data[2 * MIB as usize..].iter().all(|b| *b == 0xaa));
    }

    proptest! {
        #[test]
        fn usable_space_is_aligned_and_never_more(size in any::<u64>(), overhead in 0.0f64..1.0) {
            let u = usable_space(size, overhead);
            prop_assert_eq!(u % ALIGNMENT, 0);
            prop_assert!(u <= size);
        }
    }
}
