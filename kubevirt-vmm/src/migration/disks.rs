//! Copying the disks that live with the VMI (`DiskMigration::Copy`: a containerDisk's
//! overlay, an emptyDisk) alongside RAM, as libvirt's block migration does for upstream's
//! local disks.
//!
//! The source starts each such disk's write log (`virtio::block::write_log`) and then sends,
//! in round 0, what the guest has written so far — the image's allocated extents: a qcow2
//! overlay's own clusters read through the image layer (the target's fresh overlay over the
//! same base has the rest), a sparse file's data extents — then each round the chunks the
//! guest wrote meanwhile, and in the stop-and-copy, with the devices quiesced, the last ones.
//! Ranges that read as zeroes go as zero chunks. The target checks each chunk against its own
//! disks (index, copy mode, range) and writes it through its image layer.

use std::sync::PoisonError;

use super::MigrationError;
use super::disk_wire::{CHUNKS_PER_FRAME, DISK_CHUNK_MAX, DISK_SECTOR, DiskChunk, DiskData};
use super::wire::{DiskInfo, Message};
use crate::virtio::block::write_log::TRACK_CHUNK;
use crate::virtio::block::{DiskMigration, MigrationDisk};

/// A range of one disk: (disk index, offset, length).
pub(super) type Range = (u32, u64, u64);

/// The disk list a `Hello` carries for `disks`.
pub(super) fn describe(disks: &[MigrationDisk]) -> Vec<DiskInfo> {
    disks
        .iter()
        .map(|d| DiskInfo {
            size: d.size(),
            copy: d.mode == DiskMigration::Copy,
        })
        .collect()
}

/// The source's side: the write logs of the disks it copies, stopped when dropped.
pub(super) struct DiskCopy<'a> {
    disks: &'a [MigrationDisk],
}

impl Drop for DiskCopy<'_> {
    fn drop(&mut self) {
        for d in self.copied() {
            d.1.log.stop();
        }
    }
}

fn io_err(disk: u32, what: &str, e: std::io::Error) -> MigrationError {
    MigrationError::Vm(format!("disk {disk}: {what}: {e}"))
}

/// The usable size of a disk: whole sectors (the guest sees no more).
fn sectors_end(d: &MigrationDisk) -> u64 {
    d.size() / DISK_SECTOR * DISK_SECTOR
}

impl<'a> DiskCopy<'a> {
    /// Starts tracking the guest's writes to the copied disks of `disks`; returns the copier
    /// and round 0: what the guest wrote before (read after tracking started, so nothing
    /// written in between is missed).
    pub(super) fn start(disks: &'a [MigrationDisk]) -> Result<(Self, Vec<Range>), MigrationError> {
        let copy = DiskCopy { disks };
        let mut initial = Vec::new();
        for (i, d) in copy.copied() {
            d.log.start();
            let extents = d
                .disk
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .allocated_extents()
                .map_err(|e| io_err(i, "listing its allocated extents", e))?;
            let end = sectors_end(d);
            for (off, len) in extents {
                // Sector-aligned outward, clipped to the disk.
                let start = off / DISK_SECTOR * DISK_SECTOR;
                let stop = off.saturating_add(len).div_ceil(DISK_SECTOR) * DISK_SECTOR;
                if start < end {
                    initial.push((i, start, stop.min(end) - start));
                }
            }
        }
        Ok((copy, initial))
    }

    fn copied(&self) -> impl Iterator<Item = (u32, &'a MigrationDisk)> + 'a {
        self.disks
            .iter()
            .enumerate()
            .filter(|(_, d)| d.mode == DiskMigration::Copy)
            .map(|(i, d)| (i as u32, d))
    }

    /// The chunks written since the last call, as ranges (adjacent chunks merged).
    pub(super) fn take_dirty(&self) -> Vec<Range> {
        let mut out: Vec<Range> = Vec::new();
        for (i, d) in self.copied() {
            let end = sectors_end(d);
            for c in d.log.take() {
                let start = c * TRACK_CHUNK;
                if start >= end {
                    continue;
                }
                let len = TRACK_CHUNK.min(end - start);
                match out.last_mut() {
                    Some((di, s, l)) if *di == i && *s + *l == start => *l += len,
                    _ => out.push((i, start, len)),
                }
            }
        }
        out
    }

    /// Sends `ranges` of round `round` through `send` (one `Disk` frame at a time), reading
    /// each through the disk's image layer; `check` runs between frames. Returns the bytes
    /// of disk covered.
    pub(super) fn send(
        &self,
        round: u32,
        ranges: &[Range],
        mut send: impl FnMut(&Message) -> Result<(), MigrationError>,
        mut check: impl FnMut() -> Result<(), MigrationError>,
    ) -> Result<u64, MigrationError> {
        let mut chunks = Vec::with_capacity(CHUNKS_PER_FRAME);
        let mut covered = 0;
        for &(i, off, len) in ranges {
            let disk = &self.disks[i as usize];
            let mut at = off;
            while at < off + len {
                let n = (off + len - at).min(u64::from(DISK_CHUNK_MAX));
                let mut buf = vec![0u8; n as usize];
                disk.disk
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .read_at(&mut buf, at)
                    .map_err(|e| io_err(i, &format!("reading {n} bytes at {at}"), e))?;
                let data = if super::source::is_zero(&buf) {
                    DiskData::Zeroes(n as u32)
                } else {
                    DiskData::Bytes(buf)
                };
                chunks.push(DiskChunk {
                    disk: i,
                    offset: at,
                    data,
                });
                covered += n;
                at += n;
                if chunks.len() == CHUNKS_PER_FRAME {
                    check()?;
                    send(&Message::Disk {
                        round,
                        chunks: std::mem::take(&mut chunks),
                    })?;
                }
            }
        }
        if !chunks.is_empty() {
            send(&Message::Disk { round, chunks })?;
        }
        Ok(covered)
    }
}

/// Merges `more` into `ranges` (both of one round's pending work): sorted, duplicates and
/// overlaps merged.
pub(super) fn merge(mut ranges: Vec<Range>, more: Vec<Range>) -> Vec<Range> {
    ranges.extend(more);
    ranges.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for (i, s, l) in ranges {
        match out.last_mut() {
            Some((pi, ps, pl)) if *pi == i && s <= *ps + *pl => *pl = (*pl).max(s + l - *ps),
            _ => out.push((i, s, l)),
        }
    }
    out
}

/// The target's side: checks the source's disk list against `disks`.
///
/// # Errors
/// [`MigrationError::Disks`] describing both lists when they differ.
pub(super) fn check_disks(
    source: &[DiskInfo],
    disks: &[MigrationDisk],
) -> Result<(), MigrationError> {
    let own = describe(disks);
    if source == own.as_slice() {
        return Ok(());
    }
    let show = |l: &[DiskInfo]| {
        let parts: Vec<String> = l
            .iter()
            .map(|d| {
                format!(
                    "{} bytes{}",
                    d.size,
                    if d.copy { " copied" } else { " shared" }
                )
            })
            .collect();
        format!("{} disks [{}]", l.len(), parts.join(", "))
    };
    Err(MigrationError::Disks {
        source_disks: show(source),
        target: show(&own),
    })
}

/// Writes a received chunk into the target's disk, after checking it is one of the copied
/// disks and inside it.
///
/// # Errors
/// [`MigrationError::BadDiskChunk`] naming the chunk, or the write's failure.
pub(super) fn apply(disks: &[MigrationDisk], chunk: &DiskChunk) -> Result<(), MigrationError> {
    let bad = |why: String| MigrationError::BadDiskChunk {
        disk: chunk.disk,
        offset: chunk.offset,
        len: chunk.len(),
        why,
    };
    let disk = disks
        .get(chunk.disk as usize)
        .ok_or_else(|| bad(format!("this VM has {} disks", disks.len())))?;
    if disk.mode != DiskMigration::Copy {
        return Err(bad("the disk is shared, not copied".into()));
    }
    let size = disk.size();
    if chunk
        .offset
        .checked_add(chunk.len())
        .is_none_or(|end| end > size)
    {
        return Err(bad(format!("the disk is {size} bytes")));
    }
    let mut backend = disk.disk.lock().unwrap_or_else(PoisonError::into_inner);
    let written = match &chunk.data {
        DiskData::Zeroes(n) => backend.write_zeroes(chunk.offset, u64::from(*n)),
        DiskData::Bytes(b) => backend.write_at(b, chunk.offset),
    };
    written.map_err(|e| {
        io_err(
            chunk.disk,
            &format!("writing {} bytes at {}", chunk.len(), chunk.offset),
            e,
        )
    })
}

/// Makes what the target received durable before it acks.
pub(super) fn flush_copied(disks: &[MigrationDisk]) -> Result<(), MigrationError> {
    for (i, d) in disks.iter().enumerate() {
        if d.mode == DiskMigration::Copy {
            d.disk
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flush()
                .map_err(|e| io_err(i as u32, "flushing it", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_ranges_merge_per_disk() {
        let a = vec![(0, 0, 4096), (1, 0, 512)];
        let b = vec![(0, 2048, 8192), (0, 65536, 512), (1, 512, 512)];
        assert_eq!(
            merge(a, b),
            vec![(0, 0, 10240), (0, 65536, 512), (1, 0, 1024)]
        );
    }
}
