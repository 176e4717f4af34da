//! Refcounts: the refcount table (offsets of refcount blocks) and the blocks, each a cluster of
//! big-endian counters (one per host cluster), loaded on demand and kept in memory until the
//! image's flush writes the changed ones back.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::tables::OFFSET_MASK;

/// A refcount block in memory.
#[derive(Debug)]
struct Block {
    bytes: Vec<u8>,
    dirty: bool,
}

/// The image's refcounts (writable opens only).
#[derive(Debug)]
pub struct Refcounts {
    cluster_bits: u32,
    /// Bytes per counter (1, 2, 4 or 8: refcount_order 3..=6).
    width: usize,
    /// Refcount table: the host offset of each block (0: none yet).
    pub table: Vec<u64>,
    /// Where the table is.
    pub table_offset: u64,
    /// Its length in clusters.
    pub table_clusters: u64,
    /// The table changed since it was written.
    pub table_dirty: bool,
    /// The table moved (grew): the header must point at the new one, and the old clusters
    /// (offset, clusters) are freed after that.
    pub moved_from: Option<(u64, u64)>,
    blocks: HashMap<u64, Block>,
    /// Host byte ranges whose references were dropped: decremented only after the tables that
    /// dropped them are on disk.
    pub pending_frees: Vec<(u64, u64)>,
}

impl Refcounts {
    /// Reads the refcount table (`clusters` clusters at `offset`) of an image whose counters
    /// are `1 << order` bits wide. `order` must be 3..=6.
    pub fn load(
        file: &File,
        cluster_bits: u32,
        order: u32,
        offset: u64,
        clusters: u64,
    ) -> io::Result<Refcounts> {
        let mut raw = vec![0u8; (clusters << cluster_bits) as usize];
        file.read_exact_at(&mut raw, offset)?;
        let table = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Ok(Refcounts {
            cluster_bits,
            width: 1 << (order - 3),
            table,
            table_offset: offset,
            table_clusters: clusters,
            table_dirty: false,
            moved_from: None,
            blocks: HashMap::new(),
            pending_frees: Vec::new(),
        })
    }

    /// Counters per refcount block.
    pub fn per_block(&self) -> u64 {
        (1u64 << self.cluster_bits) / self.width as u64
    }

    fn max(&self) -> u64 {
        if self.width == 8 {
            u64::MAX
        } else {
            (1u64 << (self.width * 8)) - 1
        }
    }

    /// The block holding cluster `index`'s counter, loaded if needed. Errors when the table
    /// has no block there.
    fn block(&mut self, file: &File, index: u64) -> io::Result<(&mut Block, usize)> {
        let bi = index / self.per_block();
        let at = (index % self.per_block()) as usize * self.width;
        let off = self.table.get(bi as usize).copied().unwrap_or(0) & OFFSET_MASK;
        if off == 0 {
            return Err(io::Error::other(format!(
                "no refcount block covers cluster {index}"
            )));
        }
        if !self.blocks.contains_key(&bi) {
            let mut bytes = vec![0u8; 1 << self.cluster_bits];
            file.read_exact_at(&mut bytes, off)?;
            self.blocks.insert(bi, Block { bytes, dirty: false });
        }
        let b = self.blocks.get_mut(&bi).ok_or_else(|| io::Error::other("block"))?;
        Ok((b, at))
    }

    /// Whether a refcount block exists for host cluster `index`.
    pub fn has_block(&self, index: u64) -> bool {
        let bi = (index / self.per_block()) as usize;
        self.table.get(bi).is_some_and(|&o| o & OFFSET_MASK != 0)
    }

    /// Makes `host` the (new, all-zero) block for table slot `bi`.
    pub fn install_block(&mut self, bi: u64, host: u64) {
        self.table[bi as usize] = host;
        self.table_dirty = true;
        self.blocks.insert(
            bi,
            Block {
                bytes: vec![0u8; 1 << self.cluster_bits],
                dirty: true,
            },
        );
    }

    /// Grows the table in memory to `clusters` clusters at `offset` (the caller allocated and
    /// counts them); the old table is freed after the next flush has moved the header.
    pub fn relocate(&mut self, offset: u64, clusters: u64) {
        if self.moved_from.is_none() {
            self.moved_from = Some((self.table_offset, self.table_clusters));
        } else {
            // Never written: the previous new table is simply abandoned (freed below).
            self.pending_frees
                .push((self.table_offset, self.table_clusters << self.cluster_bits));
        }
        self.table_offset = offset;
        self.table_clusters = clusters;
        self.table
            .resize(((clusters << self.cluster_bits) / 8) as usize, 0);
        self.table_dirty = true;
    }

    /// Adds `delta` (±1) to host cluster `index`'s counter.
    pub fn add(&mut self, file: &File, index: u64, delta: i64) -> io::Result<u64> {
        let max = self.max();
        let width = self.width;
        let (b, at) = self.block(file, index)?;
        let mut v = [0u8; 8];
        v[8 - width..].copy_from_slice(&b.bytes[at..at + width]);
        let old = u64::from_be_bytes(v);
        let new = if delta >= 0 {
            old.checked_add(delta as u64).filter(|&n| n <= max)
        } else {
            old.checked_sub(delta.unsigned_abs())
        }
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("refcount of host cluster {index} would leave its range ({old} {delta:+})"),
            )
        })?;
        b.bytes[at..at + width].copy_from_slice(&new.to_be_bytes()[8 - width..]);
        b.dirty = true;
        Ok(new)
    }

    /// Whether any block or the table needs writing.
    pub fn dirty(&self) -> bool {
        self.table_dirty || self.blocks.values().any(|b| b.dirty)
    }

    /// Writes the changed blocks (not the table).
    pub fn write_blocks(&mut self, file: &File) -> io::Result<()> {
        for (bi, b) in self.blocks.iter_mut().filter(|(_, b)| b.dirty) {
            file.write_all_at(&b.bytes, self.table[*bi as usize] & OFFSET_MASK)?;
            b.dirty = false;
        }
        Ok(())
    }

    /// Writes the table if it changed.
    pub fn write_table(&mut self, file: &File) -> io::Result<()> {
        if !self.table_dirty {
            return Ok(());
        }
        let raw: Vec<u8> = self.table.iter().flat_map(|e| e.to_be_bytes()).collect();
        file.write_all_at(&raw, self.table_offset)?;
        self.table_dirty = false;
        Ok(())
    }
}
