//! Raw image files and block devices: disk offset = file offset.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::backend::{BackendError, BlockBackend, GuestBuffers, transfer_vectored};
use super::cache::CacheMode;
use super::lock::{self, open_inactive, open_locked};

/// The data (non-hole) extents of `file`'s first `size` bytes, by `SEEK_DATA`/`SEEK_HOLE`;
/// the whole range where the file system (or a block device) cannot tell.
fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let seek = |from: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        let off = i64::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: lseek on a descriptor `file` owns; no memory is passed.
        let r = unsafe { libc::lseek(fd, off, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        }
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let start = match seek(at, libc::SEEK_DATA) {
            Ok(Some(s)) if s < size => s,
            Ok(_) => break,
            Err(_) => return Ok(vec![(0, size)]),
        };
        let end = match seek(start, libc::SEEK_HOLE) {
            Ok(Some(e)) => e.min(size),
            Ok(None) => size,
            Err(_) => return Ok(vec![(0, size)]),
        };
        out.push((start, end - start));
        at = end;
    }
    Ok(out)
}

/// A raw image file (or block device): disk offset = file offset.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
    cache: CacheMode,
}

impl RawFile {
    /// Opens `path`, read-only or read-write, in [`CacheMode::Writeback`] (host page cache,
    /// guest flushes honoured).
    ///
    /// # Errors
    /// [`BackendError`] when the file cannot be opened or its size read.
    pub fn open(path: &Path, read_only: bool) -> Result<RawFile, BackendError> {
        Self::open_with_cache(path, read_only, CacheMode::Writeback)
    }

    /// Opens `path`, read-only or read-write, in cache mode `cache` (KubeVirt's `disk.cache`;
    /// see [`CacheMode`] for what each mode guarantees).
    ///
    /// The image is locked while it is open, as QEMU locks its images: read-write opens hold
    /// it alone, read-only opens share it, in this process and any other.
    ///
    /// # Errors
    /// [`BackendError::InUse`] when another open holds a conflicting lock; the other variants
    /// when the file cannot be opened in that mode (e.g. `O_DIRECT` on a file system without
    /// it), is not usable as a disk, or its size cannot be read.
    pub fn open_with_cache(
        path: &Path,
        read_only: bool,
        cache: CacheMode,
    ) -> Result<RawFile, BackendError> {
        let file = open_locked(path, read_only, cache.open_flags())?;
        Self::from_file(file, path, read_only, cache)
    }

    /// Opens `path` as [`RawFile::open_with_cache`] does, but *inactive* when writable: no
    /// lock yet, because a live migration's source still writes the image. The migration
    /// target takes the lock ([`BlockBackend::activate`]) when the source has given it up.
    ///
    /// # Errors
    /// As [`RawFile::open_with_cache`], but never [`BackendError::InUse`] for a writable open.
    pub fn open_inactive(
        path: &Path,
        read_only: bool,
        cache: CacheMode,
    ) -> Result<RawFile, BackendError> {
        let file = open_inactive(path, read_only, cache.open_flags())?;
        Self::from_file(file, path, read_only, cache)
    }

    fn from_file(
        file: File,
        path: &Path,
        read_only: bool,
        cache: CacheMode,
    ) -> Result<RawFile, BackendError> {
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
            path: path.to_owned(),
            size,
            read_only,
            cache,
        })
    }

    /// The cache mode the image was opened in.
    pub fn cache_mode(&self) -> CacheMode {
        self.cache
    }

    /// Another handle on the same open image (a duplicated descriptor), for a VM built again
    /// over the same disks (a reboot): it shares this open's lock, so the image stays held
    /// across the rebuild with no moment where another VM could take it.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated (out of descriptors).
    pub fn try_clone(&self) -> io::Result<RawFile> {
        Ok(RawFile {
            file: self.file.try_clone()?,
            path: self.path.clone(),
            size: self.size,
            read_only: self.read_only,
            cache: self.cache,
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

    fn has_volatile_cache(&self) -> bool {
        self.cache.has_volatile_cache()
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

    fn inactivate(&mut self) -> Result<(), BackendError> {
        lock::inactivate(&self.file, &self.path, self.read_only)
    }

    fn activate(&mut self) -> Result<(), BackendError> {
        lock::activate(&self.file, &self.path, self.read_only)
    }

    fn allocated_extents(&mut self) -> io::Result<Vec<(u64, u64)>> {
        data_extents(&self.file, self.size)
    }

    fn read_to_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        transfer_vectored(self.file.as_raw_fd(), bufs, offset, false)
    }

    fn write_from_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        transfer_vectored(self.file.as_raw_fd(), bufs, offset, true)
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
    fn vectored_transfers_move_guest_buffers_directly_and_match_the_bounce_path() {
        use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
        use crate::memory::{GuestMemoryMmap, GuestSlice};

        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x1_0000), 0x1_0000),
        ])
        .unwrap();
        // Three buffers, one crossing the boundary between the two regions (two slices).
        let pieces = [(0x100u64, 512usize), (0xff00, 0x200), (0x1_8000, 1024)];
        fn slices<'m>(
            mem: &'m GuestMemoryMmap,
            pieces: &[(u64, usize)],
        ) -> Vec<GuestSlice<'m>> {
            pieces
                .iter()
                .flat_map(|&(a, l)| mem.get_slices(GuestAddress(a), l).map(|s| s.unwrap()))
                .collect()
        }
        assert_eq!(slices(&mem, &pieces).len(), 4);
        let pattern: Vec<u8> = (0..2048u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut at = 0;
        for &(a, l) in &pieces {
            mem.write_slice(&pattern[at..at + l], GuestAddress(a))
                .unwrap();
            at += l;
        }
        let t = image(8192);
        let mut disk = RawFile::open(t.as_path(), false).unwrap();
        disk.write_from_guest(&slices(&mem, &pieces), 1024).unwrap();
        let mut on_disk = vec![0u8; 2048];
        t.as_file().read_exact_at(&mut on_disk, 1024).unwrap();
        assert_eq!(on_disk, pattern);

        // Read back into zeroed buffers, directly and through the trait's bounce default.
        struct Bounce<'a>(&'a mut RawFile);
        impl BlockBackend for Bounce<'_> {
            fn size(&self) -> u64 {
                self.0.size()
            }
            fn read_only(&self) -> bool {
                true
            }
            fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
                self.0.read_at(buf, offset)
            }
            fn write_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
                unreachable!()
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
        for direct in [true, false] {
            for &(a, l) in &pieces {
                mem.write_slice(&vec![0u8; l], GuestAddress(a)).unwrap();
            }
            if direct {
                disk.read_to_guest(&slices(&mem, &pieces), 1024).unwrap();
            } else {
                Bounce(&mut disk)
                    .read_to_guest(&slices(&mem, &pieces), 1024)
                    .unwrap();
            }
            let mut back = Vec::new();
            for &(a, l) in &pieces {
                let mut b = vec![0u8; l];
                mem.read_slice(&mut b, GuestAddress(a)).unwrap();
                back.extend(b);
            }
            assert_eq!(back, pattern, "direct = {direct}");
        }
        // Past the end of the file: an error, not a short read reported as success.
        assert!(disk.read_to_guest(&slices(&mem, &pieces), 7168).is_err());
    }

    #[test]
    fn a_sparse_file_lists_its_data_not_its_holes() {
        let t = TempFile::new().unwrap();
        t.as_file().set_len(16 << 20).unwrap();
        let mut disk = RawFile::open(t.as_path(), false).unwrap();
        assert_eq!(disk.allocated_extents().unwrap(), vec![]);
        disk.write_at(&[1; 4096], 1 << 20).unwrap();
        disk.write_at(&[2; 4096], 9 << 20).unwrap();
        let extents = disk.allocated_extents().unwrap();
        // The file system's granularity may widen an extent, never miss one.
        assert_eq!(extents.len(), 2, "{extents:?}");
        for (at, (start, len)) in [1u64 << 20, 9 << 20].into_iter().zip(&extents) {
            assert!(*start <= at && at + 4096 <= start + len, "{extents:?}");
        }
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
    fn an_image_has_one_writer_or_shared_readers() {
        let t = image(1024);
        let writer = RawFile::open(t.as_path(), false).unwrap();
        let e = RawFile::open(t.as_path(), false).unwrap_err();
        assert!(matches!(e, BackendError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("in use by another VM"), "{e}");
        let e = RawFile::open(t.as_path(), true).unwrap_err();
        assert!(matches!(e, BackendError::InUse { .. }), "{e}");
        // A clone (the next VM after a reboot) shares the open and its lock.
        let again = writer.try_clone().unwrap();
        drop(writer);
        assert!(
            RawFile::open(t.as_path(), true).is_err(),
            "the clone still holds it"
        );
        drop(again);
        let r1 = RawFile::open(t.as_path(), true).unwrap();
        let _r2 = RawFile::open(t.as_path(), true).unwrap();
        assert!(RawFile::open(t.as_path(), false).is_err());
        drop(r1);
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

    /// The file status flags of `file` as the kernel has them (`/proc/self/fdinfo`).
    fn status_flags(file: &File) -> i32 {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .unwrap()
            .trim();
        i32::from_str_radix(flags, 8).unwrap()
    }

    #[test]
    fn writethrough_opens_o_dsync_and_has_no_volatile_cache() {
        let t = image(4096);
        for (mode, dsync) in [
            (CacheMode::Writethrough, true),
            (CacheMode::Writeback, false),
            (CacheMode::None, false),
        ] {
            let mut disk = RawFile::open_with_cache(t.as_path(), false, mode).unwrap();
            assert_eq!(disk.cache_mode(), mode);
            assert_eq!(
                status_flags(&disk.file) & libc::O_DSYNC != 0,
                dsync,
                "O_DSYNC for {mode}"
            );
            assert_eq!(disk.has_volatile_cache(), !dsync, "{mode}");
            disk.write_at(&[7; 512], 512).unwrap();
            let mut back = [0u8; 512];
            disk.read_at(&mut back, 512).unwrap();
            assert_eq!(back, [7; 512]);
        }
        let ro = RawFile::open_with_cache(t.as_path(), true, CacheMode::Writethrough).unwrap();
        assert!(!ro.has_volatile_cache());
        drop(ro);
        assert!(
            RawFile::open(t.as_path(), false)
                .unwrap()
                .has_volatile_cache()
        );
    }
}
