//! Cluster allocation: new clusters come from the end of the file (freed clusters are not
//! reused), each counted in the refcounts, creating refcount blocks and growing the refcount
//! table as the file grows.

use std::fs::File;
use std::io;

use super::refcount::Refcounts;

/// Hands out host clusters at the end of the image.
#[derive(Debug)]
pub struct Allocator {
    cluster_bits: u32,
    /// The next unused host offset (cluster-aligned, at or past the end of the file).
    pub next_free: u64,
}

impl Allocator {
    /// Allocation from the first cluster at or after `file_len`.
    pub fn new(cluster_bits: u32, file_len: u64) -> Allocator {
        Allocator {
            cluster_bits,
            next_free: file_len.next_multiple_of(1 << cluster_bits),
        }
    }

    fn take(&mut self, clusters: u64) -> u64 {
        let at = self.next_free;
        self.next_free += clusters << self.cluster_bits;
        at
    }

    /// Allocates one cluster, with refcount 1; returns its host offset.
    pub fn alloc(&mut self, rc: &mut Refcounts, file: &File) -> io::Result<u64> {
        let at = self.take(1);
        self.count(rc, file, at)?;
        Ok(at)
    }

    /// Adds one reference to the cluster at `host`, creating its refcount block (and growing
    /// the table) first when there is none.
    fn count(&mut self, rc: &mut Refcounts, file: &File, host: u64) -> io::Result<()> {
        let index = host >> self.cluster_bits;
        if !rc.has_block(index) {
            let bi = index / rc.per_block();
            if bi >= rc.table.len() as u64 {
                self.grow_table(rc, file, bi)?;
            }
            // Counting the grown table's clusters may have created this block already.
            if !rc.has_block(index) {
                // The new block may describe itself, or need a block of its own: recurse.
                let block = self.take(1);
                rc.install_block(bi, block);
                self.count(rc, file, block)?;
            }
        }
        rc.add(file, index, 1).map(drop)
    }

    /// Moves the refcount table to a new, larger place with room for block index `needed`.
    fn grow_table(&mut self, rc: &mut Refcounts, file: &File, needed: u64) -> io::Result<()> {
        let cs = 1u64 << self.cluster_bits;
        let entries = ((needed + 1) * 2).max(rc.table.len() as u64 * 2);
        let clusters = (entries * 8).div_ceil(cs);
        let at = self.take(clusters);
        rc.relocate(at, clusters);
        for i in 0..clusters {
            self.count(rc, file, at + i * cs)?;
        }
        Ok(())
    }
}
