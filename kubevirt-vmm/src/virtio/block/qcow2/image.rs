//! [`Qcow2`]: a qcow2 image as a [`BlockBackend`].
//!
//! Reads walk L1 → L2 (cached) → data; unallocated clusters read from the backing image (or
//! as zeroes), zero clusters as zeroes, compressed clusters are inflated (raw deflate).
//! Guest reads move allocated clusters from the file, and unallocated ones from the backing
//! image, into guest memory with one `preadv` per cluster piece, as raw images do; other
//! clusters (zero, compressed, past the backing image's end) go through a buffer. Guest
//! writes go in runs of contiguous host clusters, one `pwritev` each, allocating whole
//! clusters without reading them (`guest_write`).
//!
//! Writes to a cluster the image owns alone (`COPIED`) go in place. Any other write allocates
//! a cluster at the end of the file, fills it (copy-on-write of the rest of the cluster from
//! the backing image, a compressed cluster or zeroes) and points the L2 entry at it; a new L2
//! table is allocated when the L1 entry is empty. Data is written at once; metadata (refcount
//! blocks and table, L2 tables, L1 table, header) changes in memory and reaches the file on
//! [`BlockBackend::flush`] in this order, each step made durable (`fdatasync`) before the next:
//!
//! 1. the new data clusters, then the refcount blocks that count every new cluster;
//! 2. the refcount table (when it gained blocks or moved), then the header pointing at a
//!    moved table;
//! 3. the L2 tables;
//! 4. the L1 table;
//! 5. last, the refcount decrements of clusters no longer referenced (a replaced compressed
//!    cluster, an abandoned refcount table).
//!
//! So after a crash at any point every reference on disk points at a written, counted
//! cluster: the worst case is a leaked cluster (counted, unreferenced), which `qemu-img check`
//! reports as a leak, not an error, and `qemu-img check -r leaks` reclaims. Metadata also
//! reaches the file when a changed L2 table leaves the cache and when the image is dropped;
//! in `writethrough` mode every write is followed by the whole sequence.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::os::fd::AsRawFd;

use crate::memory::GuestSlice;

use super::super::backend::{BlockBackend, GuestBuffers, transfer_vectored};
use super::alloc::Allocator;
use super::error::{ImageError, corrupt_io};
use super::header::Header;
use super::refcount::Refcounts;
use super::tables::{COPIED, Cluster, L1_RESERVED, L2Cache, OFFSET_MASK, ZERO, decode_l2};

mod extents;
mod guest_write;

/// L2 tables kept in memory (with 64 KiB clusters each maps 512 MiB of disk).
const L2_CACHE_TABLES: usize = 16;

/// A qcow2 image (version 2 or 3), optionally over a read-only backing image.
pub struct Qcow2 {
    file: File,
    path: PathBuf,
    header: Header,
    file_len: u64,
    l1: Vec<u64>,
    l1_dirty: bool,
    l2: L2Cache,
    /// Present for writable opens.
    refcounts: Option<Refcounts>,
    alloc: Allocator,
    backing: Option<Box<dyn BlockBackend>>,
    read_only: bool,
    write_through: bool,
    /// The last inflated cluster: (its compressed offset, its bytes).
    inflated: Option<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("read_only", &self.read_only)
            .field("backing", &self.backing.is_some())
            .finish_non_exhaustive()
    }
}

impl Qcow2 {
    /// Builds the backend over an open, locked `file` whose header is `header`. Checks the L1
    /// table (and, writable, loads the refcount table) against the file.
    pub(crate) fn new(
        file: File,
        path: &Path,
        header: Header,
        file_len: u64,
        read_only: bool,
        write_through: bool,
        backing: Option<Box<dyn BlockBackend>>,
    ) -> Result<Qcow2, ImageError> {
        let cs = header.cluster_size();
        let mut raw = vec![0u8; header.l1_size as usize * 8];
        file.read_exact_at(&mut raw, header.l1_table_offset)
            .map_err(|e| ImageError::io(path, e))?;
        let mut l1 = Vec::with_capacity(header.l1_size as usize);
        for (i, c) in raw.chunks_exact(8).enumerate() {
            let e = u64::from_be_bytes(c.try_into().unwrap_or_default());
            let off = e & OFFSET_MASK;
            if e & L1_RESERVED != 0 || !off.is_multiple_of(cs) || (off != 0 && off + cs > file_len) {
                return Err(ImageError::corrupt(
                    path,
                    format!(
                        "L1 entry {i} ({e:#018x}) points outside the {file_len}-byte file or is malformed"
                    ),
                ));
            }
            l1.push(e);
        }
        let refcounts = if read_only {
            None
        } else {
            let why = if header.dirty() {
                Some("it was not closed cleanly (dirty bit): repair it with `qemu-img check -r all`".to_owned())
            } else if header.marked_corrupt() {
                Some("it is marked corrupt: repair it with `qemu-img check -r all`".to_owned())
            } else if header.nb_snapshots != 0 {
                Some(format!("it has {} internal snapshots: delete them (`qemu-img snapshot -d`) or open it read-only", header.nb_snapshots))
            } else if header.refcount_order < 3 {
                Some(format!("refcount_bits={} (below 8) is not supported for writing", 1 << header.refcount_order))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ImageError::NotWritable { path: path.to_owned(), why });
            }
            let rc = Refcounts::load(
                &file,
                header.cluster_bits,
                header.refcount_order,
                header.refcount_table_offset,
                u64::from(header.refcount_table_clusters),
            )
            .map_err(|e| ImageError::io(path, e))?;
            for (i, &b) in rc.table.iter().enumerate() {
                let off = b & OFFSET_MASK;
                if b & !OFFSET_MASK != 0 || !off.is_multiple_of(cs) || (off != 0 && off + cs > file_len) {
                    return Err(ImageError::corrupt(
                        path,
                        format!("refcount table entry {i} ({b:#x}) points outside the {file_len}-byte file or is malformed"),
                    ));
                }
            }
            Some(rc)
        };
        let mut image = Qcow2 {
            file,
            path: path.to_owned(),
            alloc: Allocator::new(header.cluster_bits, file_len),
            header,
            file_len,
            l1,
            l1_dirty: false,
            l2: L2Cache::new(L2_CACHE_TABLES),
            refcounts,
            backing,
            read_only,
            write_through,
            inflated: None,
        };
        if !read_only && image.header.autoclear_features != 0 {
            // Autoclear bits (e.g. consistent bitmaps) become untrue once we write: clear them.
            image
                .file
                .write_all_at(&0u64.to_be_bytes(), 88)
                .and_then(|()| image.file.sync_data())
                .map_err(|e| ImageError::io(path, e))?;
            image.header.autoclear_features = 0;
        }
        Ok(image)
    }

    fn cluster_bits(&self) -> u32 {
        self.header.cluster_bits
    }

    fn corrupt(&self, what: impl std::fmt::Display) -> io::Error {
        corrupt_io(&self.path, what)
    }

    /// The cache index of the L2 table at `offset`, reading it when not cached (a changed
    /// table leaving the cache makes the metadata durable first).
    fn l2_table(&mut self, offset: u64, fresh: bool) -> io::Result<usize> {
        if let Some(i) = self.l2.find(offset) {
            return Ok(i);
        }
        if let Some(v) = self.l2.victim()
            && self.l2.get(v).dirty
        {
            self.flush_metadata()?;
        }
        let n = 1usize << (self.cluster_bits() - 3);
        let entries = if fresh {
            vec![0u64; n]
        } else {
            let mut raw = vec![0u8; n * 8];
            self.file.read_exact_at(&mut raw, offset)?;
            raw.chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
                .collect()
        };
        Ok(self.l2.insert(offset, entries, fresh))
    }

    /// (L1 index, L2 index) of guest cluster `gc`.
    fn split(&self, gc: u64) -> (usize, usize) {
        let bits = self.cluster_bits() - 3;
        ((gc >> bits) as usize, (gc & ((1 << bits) - 1)) as usize)
    }

    /// The raw L2 entry of guest cluster `gc` (0 when its L1 entry is empty).
    fn l2_entry(&mut self, gc: u64) -> io::Result<u64> {
        let (l1i, l2i) = self.split(gc);
        let l2_off = self.l1[l1i] & OFFSET_MASK;
        if l2_off == 0 {
            return Ok(0);
        }
        let t = self.l2_table(l2_off, false)?;
        Ok(self.l2.get(t).entries[l2i])
    }

    /// Decodes `entry`, checking where it points.
    fn decode(&self, gc: u64, entry: u64) -> io::Result<Cluster> {
        let c = decode_l2(entry, self.cluster_bits(), self.header.version)
            .map_err(|e| self.corrupt(format_args!("L2 entry of guest cluster {gc}: {e}")))?;
        let end = self.alloc.next_free.max(self.file_len);
        let outside = match c {
            Cluster::Data { host, .. } | Cluster::Zero { prealloc: Some(host) } => {
                host + self.header.cluster_size() > end
            }
            Cluster::Compressed { offset, .. } => offset >= end,
            _ => false,
        };
        if outside {
            return Err(self.corrupt(format_args!(
                "L2 entry of guest cluster {gc} ({entry:#018x}) points outside the {}-byte file",
                self.file_len
            )));
        }
        Ok(c)
    }

    /// Fills `buf` with guest cluster `gc`'s bytes from `within` on, as `cluster` describes.
    fn read_cluster(
        &mut self,
        gc: u64,
        cluster: Cluster,
        within: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        match cluster {
            Cluster::Zero { .. } => buf.fill(0),
            Cluster::Data { host, .. } => self.file.read_exact_at(buf, host + within)?,
            Cluster::Unallocated => {
                let at = (gc << self.cluster_bits()) + within;
                match &mut self.backing {
                    Some(b) if at < b.size() => {
                        let n = buf.len().min((b.size() - at) as usize);
                        b.read_at(&mut buf[..n], at)?;
                        buf[n..].fill(0);
                    }
                    _ => buf.fill(0),
                }
            }
            Cluster::Compressed { offset, len } => {
                self.inflate(gc, offset, len)?;
                let data = &self.inflated.as_ref().map(|(_, d)| d).ok_or_else(|| self.corrupt("inflate"))?;
                buf.copy_from_slice(&data[within as usize..within as usize + buf.len()]);
            }
        }
        Ok(())
    }

    /// Inflates the compressed cluster at `offset` into `self.inflated`.
    fn inflate(&mut self, gc: u64, offset: u64, len: u64) -> io::Result<()> {
        if self.inflated.as_ref().is_some_and(|(o, _)| *o == offset) {
            return Ok(());
        }
        let cs = self.header.cluster_size() as usize;
        let end = self.file_len.max(self.alloc.next_free);
        // The last compressed cluster may end before its last reserved sector.
        let len = len.min(end.saturating_sub(offset)) as usize;
        let mut input = vec![0u8; len];
        self.file.read_exact_at(&mut input, offset)?;
        let mut out = vec![0u8; cs];
        let mut z = flate2::Decompress::new(false);
        let r = z.decompress(&input, &mut out, flate2::FlushDecompress::Finish);
        if !matches!(r, Ok(flate2::Status::StreamEnd | flate2::Status::Ok | flate2::Status::BufError))
            || z.total_out() != cs as u64
        {
            return Err(self.corrupt(format_args!(
                "compressed guest cluster {gc} at offset {offset:#x} does not inflate to a cluster"
            )));
        }
        self.inflated = Some((offset, out));
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.header.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{len} bytes at {offset} pass the end of the {}-byte disk", self.header.size),
            )),
        }
    }

    fn writable(&mut self) -> io::Result<(&mut Refcounts, &File, &mut Allocator)> {
        match &mut self.refcounts {
            Some(rc) if !self.read_only => Ok((rc, &self.file, &mut self.alloc)),
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// The cache index and entry index of guest cluster `gc`'s L2 entry, allocating its L2
    /// table when the L1 entry is empty.
    fn l2_for_write(&mut self, gc: u64) -> io::Result<(usize, usize)> {
        let (l1i, l2i) = self.split(gc);
        let l2_off = self.l1[l1i] & OFFSET_MASK;
        if l2_off != 0 {
            return Ok((self.l2_table(l2_off, false)?, l2i));
        }
        let (rc, file, alloc) = self.writable()?;
        let l2_off = alloc.alloc(rc, file)?;
        // Cached (and dirty) before the L1 entry points at it: making room in the cache may
        // flush, and no flush may write an L1 entry whose table is not written first.
        let t = self.l2_table(l2_off, true)?;
        self.l1[l1i] = l2_off | COPIED;
        self.l1_dirty = true;
        Ok((t, l2i))
    }

    /// Writes `buf` into guest cluster `gc` from byte `within`.
    fn write_cluster(&mut self, gc: u64, within: u64, buf: &[u8]) -> io::Result<()> {
        let (t, i) = self.l2_for_write(gc)?;
        let entry = self.l2.get(t).entries[i];
        let cluster = self.decode(gc, entry)?;
        if let Cluster::Data { host, copied: true } = cluster {
            return self.file.write_all_at(buf, host + within);
        }
        let cs = self.header.cluster_size();
        let mut whole = vec![0u8; cs as usize];
        if buf.len() as u64 != cs {
            self.read_cluster(gc, cluster, 0, &mut whole)?;
        }
        whole[within as usize..within as usize + buf.len()].copy_from_slice(buf);
        let (rc, file, alloc) = self.writable()?;
        let host = match cluster {
            Cluster::Zero { prealloc: Some(h) } if entry & COPIED != 0 => h,
            _ => alloc.alloc(rc, file)?,
        };
        match cluster {
            Cluster::Compressed { offset, len } => {
                let start = offset & !511;
                rc.pending_frees.push((start, (offset + len) - start));
            }
            Cluster::Data { host: old, .. } => rc.pending_frees.push((old, cs)),
            Cluster::Zero { prealloc: Some(old) } if old != host => rc.pending_frees.push((old, cs)),
            _ => {}
        }
        self.file.write_all_at(&whole, host)?;
        self.set_entry(gc, host | COPIED)
    }

    /// Sets guest cluster `gc`'s L2 entry (its table is cached and allocated).
    fn set_entry(&mut self, gc: u64, entry: u64) -> io::Result<()> {
        let (t, i) = self.l2_for_write(gc)?;
        let table = self.l2.get_mut(t);
        table.entries[i] = entry;
        table.dirty = true;
        Ok(())
    }

    /// Writes every metadata change to the file in the crash-safe order (see the module
    /// documentation), each step durable before the next.
    pub fn flush_metadata(&mut self) -> io::Result<()> {
        self.flush_steps(usize::MAX)
    }

    /// Test hook: performs only the first `steps` steps of [`Qcow2::flush_metadata`] (1:
    /// refcount blocks, 2: refcount table, 3: header, 4: L2 tables, 5: L1 table, 6:
    /// decrements), leaving the file as a crash right after them would.
    #[cfg(feature = "unstable-internals")]
    #[doc(hidden)]
    pub fn crash_after(&mut self, steps: usize) -> io::Result<()> {
        self.flush_steps(steps)
    }

    fn flush_steps(&mut self, steps: usize) -> io::Result<()> {
        let mut step = 0;
        macro_rules! step {
            () => {
                step += 1;
                if step > steps {
                    return Ok(());
                }
            };
        }
        let Some(rc) = &mut self.refcounts else {
            return Ok(());
        };
        let l2_dirty = self.l2.tables_mut().any(|t| t.dirty);
        if !rc.dirty() && !l2_dirty && !self.l1_dirty && rc.pending_frees.is_empty() {
            return self.file.sync_data();
        }
        // 1. data, then the refcount blocks counting the new clusters.
        step!();
        rc.write_blocks(&self.file)?;
        self.file.sync_data()?;
        // 2. the refcount table, then the header pointing at a moved one.
        step!();
        if rc.table_dirty {
            rc.write_table(&self.file)?;
            self.file.sync_data()?;
        }
        step!();
        if let Some((old, clusters)) = rc.moved_from.take() {
            let mut h = [0u8; 12];
            h[..8].copy_from_slice(&rc.table_offset.to_be_bytes());
            h[8..].copy_from_slice(&(rc.table_clusters as u32).to_be_bytes());
            self.file.write_all_at(&h, 48)?;
            self.file.sync_data()?;
            self.header.refcount_table_offset = rc.table_offset;
            self.header.refcount_table_clusters = rc.table_clusters as u32;
            rc.pending_frees.push((old, clusters << self.header.cluster_bits));
        }
        // 3. L2 tables.
        step!();
        if l2_dirty {
            for t in self.l2.tables_mut().filter(|t| t.dirty) {
                let raw: Vec<u8> = t.entries.iter().flat_map(|e| e.to_be_bytes()).collect();
                self.file.write_all_at(&raw, t.offset)?;
                t.dirty = false;
            }
            self.file.sync_data()?;
        }
        // 4. the L1 table.
        step!();
        if self.l1_dirty {
            let raw: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file.write_all_at(&raw, self.header.l1_table_offset)?;
            self.file.sync_data()?;
            self.l1_dirty = false;
        }
        // 5. drop the references nothing points at any more.
        step!();
        if !rc.pending_frees.is_empty() {
            let cb = self.header.cluster_bits;
            for (start, len) in std::mem::take(&mut rc.pending_frees) {
                let first = start >> cb;
                let last = (start + len - 1) >> cb;
                for c in first..=last {
                    rc.add(&self.file, c, -1)?;
                }
            }
            rc.write_blocks(&self.file)?;
            self.file.sync_data()?;
        }
        self.file_len = self.file_len.max(self.alloc.next_free);
        Ok(())
    }

    /// Makes `[offset, offset + len)` read as zeroes: whole clusters become zero clusters (v3,
    /// keeping an allocated cluster reserved), the rest is written with zeroes.
    fn zero_range(&mut self, mut offset: u64, len: u64) -> io::Result<()> {
        self.check_range(offset, len)?;
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let cs = self.header.cluster_size();
        let end = offset + len;
        while offset < end {
            let gc = offset >> self.cluster_bits();
            let within = offset % cs;
            let n = (cs - within).min(end - offset);
            if within == 0 && n == cs && self.header.version >= 3 {
                let (t, i) = self.l2_for_write(gc)?;
                let entry = self.l2.get(t).entries[i];
                let new = match self.decode(gc, entry)? {
                    Cluster::Data { host, copied: true } => host | COPIED | ZERO,
                    Cluster::Zero { prealloc: Some(h) } if entry & COPIED != 0 => h | COPIED | ZERO,
                    Cluster::Compressed { offset, len } => {
                        let (rc, _, _) = self.writable()?;
                        let start = offset & !511;
                        rc.pending_frees.push((start, offset + len - start));
                        ZERO
                    }
                    Cluster::Data { host, .. } | Cluster::Zero { prealloc: Some(host) } => {
                        let (rc, _, _) = self.writable()?;
                        rc.pending_frees.push((host, cs));
                        ZERO
                    }
                    _ => ZERO,
                };
                self.set_entry(gc, new)?;
            } else {
                self.write_cluster(gc, within, &vec![0u8; n as usize])?;
            }
            offset += n;
        }
        self.after_write()
    }

    /// Calls `f(self, guest cluster, offset within it, piece)` for each piece of `bufs` (laid
    /// out from disk offset `offset`) that stays within one cluster, in order.
    fn each_piece(
        &mut self,
        bufs: &GuestBuffers<'_>,
        offset: u64,
        mut f: impl FnMut(&mut Self, u64, u64, GuestSlice<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let cs = self.header.cluster_size();
        let mut at = offset;
        for b in bufs {
            let mut done = 0usize;
            while done < b.len() {
                let within = at % cs;
                let n = ((cs - within) as usize).min(b.len() - done);
                let piece = b.subslice(done, n).map_err(io::Error::other)?;
                f(self, at >> self.cluster_bits(), within, piece)?;
                done += n;
                at += n as u64;
            }
        }
        Ok(())
    }

    fn after_write(&mut self) -> io::Result<()> {
        if self.write_through {
            self.flush_metadata()?;
        }
        Ok(())
    }
}

impl BlockBackend for Qcow2 {
    fn size(&self) -> u64 {
        self.header.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let cs = self.header.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let gc = at >> self.cluster_bits();
            let within = at % cs;
            let n = ((cs - within) as usize).min(buf.len() - done);
            let entry = self.l2_entry(gc)?;
            let cluster = self.decode(gc, entry)?;
            self.read_cluster(gc, cluster, within, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let cs = self.header.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let within = at % cs;
            let n = ((cs - within) as usize).min(buf.len() - done);
            self.write_cluster(at >> self.cluster_bits(), within, &buf[done..done + n])?;
            done += n;
        }
        self.after_write()
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.flush_metadata()
    }

    fn allocated_extents(&mut self) -> io::Result<Vec<(u64, u64)>> {
        self.allocated_clusters()
    }

    fn has_volatile_cache(&self) -> bool {
        !self.write_through
    }

    fn read_to_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        let total = bufs.iter().map(|b| b.len() as u64).sum();
        self.check_range(offset, total)?;
        let mut bounce = Vec::new();
        self.each_piece(bufs, offset, |image, gc, within, piece| {
            let entry = image.l2_entry(gc)?;
            match image.decode(gc, entry)? {
                // Allocated data: straight from the file into guest memory.
                Cluster::Data { host, .. } => {
                    transfer_vectored(image.file.as_raw_fd(), &[piece], host + within, false)
                }
                // Not in the overlay and wholly inside the backing image: straight from the
                // backing image (a containerDisk's base) into guest memory as well.
                Cluster::Unallocated
                    if image.backing.as_ref().is_some_and(|b| {
                        (gc << image.cluster_bits()) + within + piece.len() as u64 <= b.size()
                    }) =>
                {
                    let at = (gc << image.cluster_bits()) + within;
                    match &mut image.backing {
                        Some(b) => b.read_to_guest(&[piece], at),
                        None => Err(image.corrupt("backing image")),
                    }
                }
                cluster => {
                    bounce.resize(piece.len(), 0);
                    image.read_cluster(gc, cluster, within, &mut bounce)?;
                    piece.copy_from(&bounce[..]);
                    Ok(())
                }
            }
        })
    }

    fn write_from_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        let total = bufs.iter().map(|b| b.len() as u64).sum();
        self.check_range(offset, total)?;
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        self.write_guest_runs(bufs, offset)?;
        self.after_write()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // Contents become unspecified: zeroes are a correct choice.
        self.zero_range(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }
}

impl Drop for Qcow2 {
    fn drop(&mut self) {
        if !self.read_only
            && let Err(e) = self.flush_metadata()
        {
            log::error!("qcow2 image {}: writing metadata at close failed: {e}", self.path.display());
        }
    }
}
