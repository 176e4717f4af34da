//! Where a virtio-blk disk's bytes live: the [`BlockBackend`] trait and raw image files.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
    /// The guest no longer needs `[offset, offset + len)`; its contents become unspecified.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// `[offset, offset + len)` reads as zeroes afterwards.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()>;
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

/// A raw image file (or block device): disk offset = file offset.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    read_only: bool,
}

impl RawFile {
    /// Opens `path`, read-only or read-write.
    pub fn open(path: &Path, read_only: bool) -> Result<RawFile, BackendError> {
        let (mode, mode_verb) = if read_only {
            ("read-only", "read")
        } else {
            ("read-write", "read and write")
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BackendError::Open {
                path: path.to_owned(),
                mode,
                mode_verb,
                source,
            })?;
        let meta = file.metadata().map_err(|source| BackendError::Stat {
            path: path.to_owned(),
            source,
        })?;
        use std::os::unix::fs::FileTypeExt;
        let size = if meta.file_type().is_block_device() {
            let mut f = &file;
            io::Seek::seek(&mut f, io::SeekFrom::End(0)).map_err(|source| BackendError::Stat {
                path: path.to_owned(),
                source,
            })?
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(BackendError::NotAFile(path.to_owned()));
        };
        if size == 0 || !size.is_multiple_of(512) {
            return Err(BackendError::Size {
                path: path.to_owned(),
                size,
            });
        }
        Ok(RawFile {
            file,
            size,
            read_only,
        })
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate on a file descriptor this struct owns; no memory is passed.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zero_buffers(&mut self, mut offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; 64 << 10];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(zeroes.len() as u64) as usize;
            self.file.write_all_at(&zeroes[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

impl BlockBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if unsupported(&e) => Ok(()),
            r => r,
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if unsupported(&e) => self.write_zero_buffers(offset, len),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::tempfile::TempFile;

    fn image(len: usize) -> TempFile {
        let t = TempFile::new().unwrap();
        t.as_file().write_all_at(&vec![0xaa; len], 0).unwrap();
        t
    }

    #[test]
    fn reads_writes_flushes_and_zeroes_a_raw_file() {
        let t = image(8192);
        let mut disk = RawFile::open(t.as_path(), false).unwrap();
        assert_eq!(disk.size(), 8192);
        disk.write_at(b"hello", 512).unwrap();
        disk.flush().unwrap();
        let mut b = [0u8; 5];
        disk.read_at(&mut b, 512).unwrap();
        assert_eq!(&b, b"hello");
        disk.write_zeroes(0, 4096).unwrap();
        disk.discard(4096, 4096).unwrap();
        let mut all = vec![0u8; 8192];
        t.as_file().read_exact_at(&mut all, 0).unwrap();
        assert!(all[..4096].iter().all(|&x| x == 0));
        assert_eq!(
            std::fs::metadata(t.as_path()).unwrap().len(),
            8192,
            "size is kept"
        );
        assert!(
            disk.read_at(&mut b, 8190).is_err(),
            "reads past the end fail"
        );
    }

    #[test]
    fn read_only_images_refuse_writes_at_the_os_level() {
        let t = image(1024);
        let mut disk = RawFile::open(t.as_path(), true).unwrap();
        assert!(disk.read_only());
        assert!(disk.write_at(b"x", 0).is_err());
        disk.flush().unwrap();
    }

    #[test]
    fn unusable_images_get_errors_that_name_the_file() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let missing = dir.as_path().join("missing.img");
        let e = RawFile::open(&missing, false).unwrap_err().to_string();
        assert!(e.contains("missing.img") && e.contains("read-write"), "{e}");
        let e = RawFile::open(dir.as_path(), true).unwrap_err();
        assert!(matches!(e, BackendError::NotAFile(_)), "{e}");
        let odd = image(1000);
        let e = RawFile::open(odd.as_path(), true).unwrap_err().to_string();
        assert!(
            e.contains("1000 bytes") && e.contains("multiple of 512"),
            "{e}"
        );
        let empty = TempFile::new().unwrap();
        assert!(matches!(
            RawFile::open(empty.as_path(), true),
            Err(BackendError::Size { .. })
        ));
    }
}
