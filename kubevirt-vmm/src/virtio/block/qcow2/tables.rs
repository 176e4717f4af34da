//! L1/L2 entries and a small cache of L2 tables.
//!
//! An L1 entry points at an L2 table (one cluster of 64-bit big-endian entries); an L2 entry
//! says where a guest cluster's data lives. Tables are kept in memory as host-endian `u64`s;
//! changed tables are written back by the image's flush (see `image`), in its order.

/// Offset bits of L1 and standard L2 entries (bits 9..=55).
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// The entry's cluster has refcount 1: it may be written in place.
pub const COPIED: u64 = 1 << 63;
/// The L2 entry describes a compressed cluster.
pub const COMPRESSED: u64 = 1 << 62;
/// (v3) The guest cluster reads as zeroes.
pub const ZERO: u64 = 1;
/// Bits that must be zero in an L1 entry.
pub const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Bits that must be zero in a standard L2 entry.
pub const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// Where a guest cluster's data is, decoded from its L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// Not allocated here: the backing file's data, or zeroes without one.
    Unallocated,
    /// Reads as zeroes; `prealloc` is a host cluster that stays reserved for it (v3).
    Zero {
        /// The reserved host cluster, if any.
        prealloc: Option<u64>,
    },
    /// Stored at `host`; `copied` when it may be overwritten in place.
    Data {
        /// Host offset of the cluster.
        host: u64,
        /// Refcount is exactly 1.
        copied: bool,
    },
    /// Deflate-compressed bytes at `offset`, `len` bytes long at most.
    Compressed {
        /// Host byte offset of the compressed data.
        offset: u64,
        /// Bytes reserved for it (whole 512-byte sectors less `offset`'s sector position).
        len: u64,
    },
}

/// Why an L2 entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryError {
    /// Reserved bits are set.
    Reserved(u64),
    /// The host offset is not cluster-aligned.
    Unaligned(u64),
    /// The zero flag in a version 2 image.
    ZeroInV2,
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryError::Reserved(e) => write!(f, "reserved bits set in entry {e:#018x}"),
            EntryError::Unaligned(o) => write!(f, "host offset {o:#x} is not cluster-aligned"),
            EntryError::ZeroInV2 => write!(f, "the zero flag is set in a version 2 image"),
        }
    }
}

/// Decodes L2 entry `e` of an image with `cluster_bits` and `version`.
pub fn decode_l2(e: u64, cluster_bits: u32, version: u32) -> Result<Cluster, EntryError> {
    if e & COMPRESSED != 0 {
        // Offset in the low (62 - (cluster_bits - 8)) bits; above them, extra 512-byte sectors.
        let shift = 62 - (cluster_bits - 8);
        let offset = e & ((1u64 << shift) - 1);
        let sectors = ((e & !COPIED & !COMPRESSED) >> shift) + 1;
        let len = sectors * 512 - (offset & 511);
        return Ok(Cluster::Compressed { offset, len });
    }
    if e & L2_RESERVED != 0 {
        return Err(EntryError::Reserved(e));
    }
    let host = e & OFFSET_MASK;
    if host & ((1u64 << cluster_bits) - 1) != 0 {
        return Err(EntryError::Unaligned(host));
    }
    if e & ZERO != 0 {
        if version < 3 {
            return Err(EntryError::ZeroInV2);
        }
        return Ok(Cluster::Zero {
            prealloc: (host != 0).then_some(host),
        });
    }
    if host == 0 {
        return Ok(Cluster::Unallocated);
    }
    Ok(Cluster::Data {
        host,
        copied: e & COPIED != 0,
    })
}

/// One cached L2 table.
#[derive(Debug)]
pub struct CachedTable {
    /// Host offset of the table.
    pub offset: u64,
    /// Its entries.
    pub entries: Vec<u64>,
    /// Changed since it was last written.
    pub dirty: bool,
    last_use: u64,
}

/// A least-recently-used cache of a few L2 tables.
#[derive(Debug)]
pub struct L2Cache {
    tables: Vec<CachedTable>,
    capacity: usize,
    clock: u64,
}

impl L2Cache {
    /// A cache of at most `capacity` tables.
    pub fn new(capacity: usize) -> L2Cache {
        L2Cache {
            tables: Vec::with_capacity(capacity),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The index of the table at `offset`, if cached (and marks it used).
    pub fn find(&mut self, offset: u64) -> Option<usize> {
        self.clock += 1;
        let i = self.tables.iter().position(|t| t.offset == offset)?;
        self.tables[i].last_use = self.clock;
        Some(i)
    }

    /// The slot a new table would take: `None` while there is room, otherwise the least
    /// recently used table's index (its owner writes it back first if dirty).
    pub fn victim(&self) -> Option<usize> {
        if self.tables.len() < self.capacity {
            return None;
        }
        self.tables
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| t.last_use)
            .map(|(i, _)| i)
    }

    /// Caches `entries` as the table at `offset`, replacing the victim; returns its index.
    pub fn insert(&mut self, offset: u64, entries: Vec<u64>, dirty: bool) -> usize {
        self.clock += 1;
        let t = CachedTable {
            offset,
            entries,
            dirty,
            last_use: self.clock,
        };
        match self.victim() {
            Some(i) => {
                self.tables[i] = t;
                i
            }
            None => {
                self.tables.push(t);
                self.tables.len() - 1
            }
        }
    }

    /// The table at index `i`.
    pub fn get(&self, i: usize) -> &CachedTable {
        &self.tables[i]
    }

    /// The table at index `i`, to change (the caller marks it dirty).
    pub fn get_mut(&mut self, i: usize) -> &mut CachedTable {
        &mut self.tables[i]
    }

    /// Every cached table, to write the dirty ones back.
    pub fn tables_mut(&mut self) -> impl Iterator<Item = &mut CachedTable> {
        self.tables.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_decode_as_the_specification_says() {
        assert_eq!(decode_l2(0, 16, 3), Ok(Cluster::Unallocated));
        assert_eq!(
            decode_l2(COPIED | 0x5_0000, 16, 3),
            Ok(Cluster::Data { host: 0x5_0000, copied: true })
        );
        assert_eq!(decode_l2(ZERO, 16, 3), Ok(Cluster::Zero { prealloc: None }));
        assert_eq!(decode_l2(ZERO, 16, 2), Err(EntryError::ZeroInV2));
        assert_eq!(
            decode_l2(0x5_0200, 16, 3),
            Err(EntryError::Unaligned(0x5_0200))
        );
        assert!(matches!(decode_l2(0x5_0002, 16, 3), Err(EntryError::Reserved(_))));
        // 64 KiB clusters: offset in bits 0..54, sector count above.
        let e = COMPRESSED | (2u64 << 54) | 0x12_3456;
        assert_eq!(
            decode_l2(e, 16, 3),
            Ok(Cluster::Compressed { offset: 0x12_3456, len: 3 * 512 - 0x56 })
        );
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_table() {
        let mut c = L2Cache::new(2);
        c.insert(1, vec![], false);
        c.insert(2, vec![], false);
        c.find(1);
        assert_eq!(c.victim().map(|i| c.get(i).offset), Some(2));
        c.insert(3, vec![], false);
        assert!(c.find(2).is_none() && c.find(1).is_some() && c.find(3).is_some());
    }
}
