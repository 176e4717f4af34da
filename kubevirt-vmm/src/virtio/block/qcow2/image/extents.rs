//! Which guest clusters an image holds itself: data, zero and compressed clusters, but not
//! the unallocated ones a backing file (or zeroes) provides. A live migration copies exactly
//! these of a containerDisk's overlay: the target's fresh overlay over the same base has the
//! rest already.

use std::io;

use super::super::tables::{Cluster, OFFSET_MASK};
use super::Qcow2;

impl Qcow2 {
    /// The byte ranges of the guest clusters this image holds, ascending, adjacent ones
    /// merged (the last one ends at the disk size).
    pub(crate) fn allocated_clusters(&mut self) -> io::Result<Vec<(u64, u64)>> {
        let cs = self.header.cluster_size();
        let size = self.header.size;
        let per_l2 = 1u64 << (self.cluster_bits() - 3);
        let clusters = size.div_ceil(cs);
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut gc = 0;
        while gc < clusters {
            let (l1i, _) = self.split(gc);
            if self.l1.get(l1i).is_none_or(|e| e & OFFSET_MASK == 0) {
                // No L2 table: none of its clusters is allocated.
                gc = (gc / per_l2 + 1) * per_l2;
                continue;
            }
            let entry = self.l2_entry(gc)?;
            if self.decode(gc, entry)? != Cluster::Unallocated {
                let start = gc * cs;
                let len = cs.min(size - start);
                match out.last_mut() {
                    Some((s, l)) if *s + *l == start => *l += len,
                    _ => out.push((start, len)),
                }
            }
            gc += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::virtio::block::{CacheMode, ImageFormat, create_overlay, open_image};
    use vmm_sys_util::tempdir::TempDir;

    #[test]
    fn an_overlay_lists_the_clusters_it_holds_not_its_bases() {
        let dir = TempDir::new().unwrap();
        let base = dir.as_path().join("base.raw");
        std::fs::write(&base, vec![0xbb; 4 << 20]).unwrap();
        let overlay = dir.as_path().join("overlay.qcow2");
        create_overlay(&overlay, &base, ImageFormat::Raw, 4 << 20).unwrap();
        let mut img = open_image(&overlay, false, CacheMode::Writeback, &[base.as_path()]).unwrap();
        assert_eq!(img.allocated_extents().unwrap(), vec![], "a fresh overlay holds nothing");
        img.write_at(&[1; 512], 70_000).unwrap(); // inside cluster 1 (64 KiB clusters)
        img.write_at(&[2; 4096], 2 << 20).unwrap(); // cluster 32
        img.write_at(&[3; 512], (2 << 20) + (64 << 10)).unwrap(); // cluster 33: merged
        img.write_zeroes(3 << 20, 64 << 10).unwrap(); // cluster 48: zeroes over the base
        let cs = 64 << 10;
        assert_eq!(
            img.allocated_extents().unwrap(),
            vec![(cs, cs), (32 * cs, 2 * cs), (48 * cs, cs)]
        );
        let mut b = [0u8; 4];
        img.read_at(&mut b, 3 << 20).unwrap();
        assert_eq!(b, [0; 4], "the zeroes are the overlay's, the base is hidden");
    }
}
