//! A containerDisk's copy-on-write overlay: reads come from the cached image until the guest
//! writes a cluster, which is then copied up into a sparse per-VMI file and read from there.
//! The image is opened read-only and never written; the overlay (and its in-memory map of
//! written clusters) lives as long as the VMI, as upstream's ephemeral containerDisk does.

use kubevirt_vmm::virtio::block::{BlockBackend, CacheMode};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Copy-up granularity.
pub const CLUSTER: u64 = 4096;

/// The overlay.
#[derive(Debug)]
pub struct Overlay {
    base: File,
    top: File,
    size: u64,
    read_only: bool,
    /// Writethrough: every write is durable (in the top file) before it completes.
    sync_writes: bool,
    /// One bit per cluster: set once the cluster lives in `top`.
    written: Vec<u64>,
}

impl Overlay {
    /// `base` (opened read-only) under a new or emptied `top` file; `read_only` refuses guest
    /// writes.
    pub fn open(base: &Path, top: &Path, read_only: bool) -> io::Result<Overlay> {
        Self::open_with_cache(base, top, read_only, CacheMode::Writeback)
    }

    /// [`Overlay::open`] with the disk's cache mode: writethrough syncs each write and tells
    /// the device there is no volatile cache to flush.
    pub fn open_with_cache(
        base: &Path,
        top: &Path,
        read_only: bool,
        cache: CacheMode,
    ) -> io::Result<Overlay> {
        let base = File::open(base)?;
        let size = base.metadata()?.len();
        let top = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(top)?;
        top.set_len(size)?;
        let clusters = size.div_ceil(CLUSTER);
        Ok(Overlay {
            base,
            top,
            size,
            read_only,
            sync_writes: cache == CacheMode::Writethrough,
            written: vec![0; clusters.div_ceil(64) as usize],
        })
    }

    fn is_written(&self, cluster: u64) -> bool {
        self.written[(cluster / 64) as usize] & (1 << (cluster % 64)) != 0
    }

    fn mark(&mut self, cluster: u64) {
        self.written[(cluster / 64) as usize] |= 1 << (cluster % 64);
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at {offset} go past the disk's {} bytes",
                    self.size
                ),
            )),
        }
    }

    /// Splits `[offset, offset + len)` at cluster boundaries: (cluster, offset, length).
    fn pieces(offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64)> {
        let end = offset + len;
        let mut at = offset;
        std::iter::from_fn(move || {
            (at < end).then(|| {
                let cluster = at / CLUSTER;
                let n = ((cluster + 1) * CLUSTER).min(end) - at;
                let piece = (cluster, at, n);
                at += n;
                piece
            })
        })
    }

    /// Copies cluster `c` up from the base unless it is there already.
    fn copy_up(&mut self, c: u64) -> io::Result<()> {
        if self.is_written(c) {
            return Ok(());
        }
        let start = c * CLUSTER;
        let n = CLUSTER.min(self.size - start) as usize;
        let mut buf = vec![0u8; n];
        self.base.read_exact_at(&mut buf, start)?;
        self.top.write_all_at(&buf, start)?;
        self.mark(c);
        Ok(())
    }

    /// Makes whole cluster `c` read as zeroes (a hole in the top file).
    fn zero_cluster(&mut self, c: u64) -> io::Result<()> {
        let start = c * CLUSTER;
        let n = CLUSTER.min(self.size - start);
        punch_hole(&self.top, start, n)
            .or_else(|_| self.top.write_all_at(&vec![0; n as usize], start))?;
        self.mark(c);
        Ok(())
    }

    fn whole_cluster(&self, c: u64, at: u64, n: u64) -> bool {
        at == c * CLUSTER && n == CLUSTER.min(self.size - at)
    }
}

fn punch_hole(f: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a descriptor we own, with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "the disk is read-only")
}

impl BlockBackend for Overlay {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        let mut done = 0usize;
        for (c, at, n) in Self::pieces(offset, buf.len() as u64) {
            let dst = &mut buf[done..done + n as usize];
            if self.is_written(c) {
                self.top.read_exact_at(dst, at)?;
            } else {
                self.base.read_exact_at(dst, at)?;
            }
            done += n as usize;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        self.check(offset, buf.len() as u64)?;
        let mut done = 0usize;
        for (c, at, n) in Self::pieces(offset, buf.len() as u64) {
            if self.whole_cluster(c, at, n) {
                self.mark(c);
            } else {
                self.copy_up(c)?;
            }
            self.top.write_all_at(&buf[done..done + n as usize], at)?;
            done += n as usize;
        }
        if self.sync_writes {
            self.top.sync_data()?;
        }
        Ok(())
    }

    fn has_volatile_cache(&self) -> bool {
        !self.sync_writes
    }

    fn flush(&mut self) -> io::Result<()> {
        self.top.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // Contents become unspecified: whole clusters turn into holes, partial ones stay.
        if self.read_only {
            return Err(read_only_error());
        }
        self.check(offset, len)?;
        for (c, at, n) in Self::pieces(offset, len) {
            if self.whole_cluster(c, at, n) {
                self.zero_cluster(c)?;
            }
        }
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        self.check(offset, len)?;
        for (c, at, n) in Self::pieces(offset, len) {
            if self.whole_cluster(c, at, n) {
                self.zero_cluster(c)?;
            } else {
                self.write_at(&vec![0; n as usize], at)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIZE: u64 = 5 * CLUSTER + 100;

    fn files(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
        let dir = std::env::temp_dir().join(format!("kv-overlay-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        let base = dir.join("base.img");
        std::fs::write(&base, &image).unwrap();
        (base, dir.join("top.overlay"), image)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Zero(u64, u64),
        Read(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..SIZE, proptest::collection::vec(any::<u8>(), 1..9000))
                .prop_map(|(o, d)| Op::Write(o, d)),
            (0..SIZE, 1..9000u64).prop_map(|(o, n)| Op::Zero(o, n)),
            (0..SIZE, 1..9000u64).prop_map(|(o, n)| Op::Read(o, n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// The overlay reads like a plain disk that took the same writes; the image never
        /// changes; requests past the end fail and change nothing.
        #[test]
        fn behaves_like_a_plain_disk_and_never_writes_the_image(ops in proptest::collection::vec(op(), 1..24)) {
            let (base, top, image) = files("prop");
            let mut o = Overlay::open(&base, &top, false).unwrap();
            let mut model = image.clone();
            for op in ops {
                match op {
                    Op::Write(off, data) => {
                        let fits = off + data.len() as u64 <= SIZE;
                        prop_assert_eq!(o.write_at(&data, off).is_ok(), fits);
                        if fits {
                            model[off as usize..off as usize + data.len()].copy_from_slice(&data);
                        }
                    }
                    Op::Zero(off, n) => {
                        let fits = off + n <= SIZE;
                        prop_assert_eq!(o.write_zeroes(off, n).is_ok(), fits);
                        if fits {
                            model[off as usize..(off + n) as usize].fill(0);
                        }
                    }
                    Op::Read(off, n) => {
                        let mut buf = vec![0u8; n as usize];
                        let fits = off + n <= SIZE;
                        prop_assert_eq!(o.read_at(&mut buf, off).is_ok(), fits);
                        if fits {
                            prop_assert_eq!(&buf[..], &model[off as usize..(off + n) as usize]);
                        }
                    }
                }
            }
            let mut all = vec![0u8; SIZE as usize];
            o.read_at(&mut all, 0).unwrap();
            prop_assert_eq!(all, model);
            prop_assert_eq!(std::fs::read(&base).unwrap(), image);
        }
    }

    #[test]
    fn writethrough_has_no_volatile_cache() {
        let (base, top, _) = files("wt");
        let o = Overlay::open_with_cache(&base, &top, false, CacheMode::Writethrough).unwrap();
        assert!(!o.has_volatile_cache());
        let o = Overlay::open(&base, &top, false).unwrap();
        assert!(o.has_volatile_cache());
    }

    #[test]
    fn a_read_only_overlay_refuses_writes() {
        let (base, top, _) = files("ro");
        let mut o = Overlay::open(&base, &top, true).unwrap();
        assert!(o.read_only());
        assert_eq!(
            o.write_at(b"x", 0).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert!(o.write_zeroes(0, CLUSTER).is_err());
    }
}
