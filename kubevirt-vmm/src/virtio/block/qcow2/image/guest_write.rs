//! Guest write requests in runs: the request is taken a guest cluster at a time, and every
//! cluster that can be written in place (an owned cluster, or a whole cluster that gets a new
//! host cluster) joins the current run of contiguous host bytes. A run goes to the file with
//! one `pwritev` straight from guest memory, so a request over fresh clusters, which the
//! allocator hands out one after the other at the end of the file, is one system call with no
//! copy and no read-modify-write.
//!
//! Crash order: a run's new L2 entries are set (in memory) only after its data is written, and
//! the old clusters they replace are queued for freeing only after their entry changed, so
//! that a metadata flush at any point in between (an L2 cache eviction) never writes an entry
//! pointing at unwritten data nor drops a count that an on-disk entry still needs. The new
//! clusters are counted when allocated: a crash before their entries reach the file leaks
//! them, as any allocation does.
//!
//! Only a cluster the request covers partly and that the image does not own (copy-on-write
//! of a backing, zero or compressed cluster) still goes through a bounce buffer and
//! [`Qcow2::write_cluster`], which fills the rest of the new cluster.

use std::io;
use std::os::fd::AsRawFd;

use crate::memory::GuestSlice;

use super::super::super::backend::{GuestBuffers, transfer_vectored};
use super::super::tables::{COPIED, Cluster};
use super::Qcow2;

/// Contiguous host bytes waiting for one `pwritev`, and the L2 entries of the clusters it
/// allocated.
#[derive(Default)]
struct Run<'a> {
    /// Host offset of the run's first byte.
    host: u64,
    /// Bytes in the run.
    len: u64,
    /// The guest memory the bytes come from, in order.
    slices: Vec<GuestSlice<'a>>,
    /// The L2 entries to set once the bytes are written.
    entries: Vec<NewEntry>,
}

/// An L2 entry a run sets after writing its data.
struct NewEntry {
    /// The guest cluster.
    gc: u64,
    /// Its new L2 entry.
    entry: u64,
    /// The host bytes (offset, length) the old entry held, freed once the new one is set.
    free: Option<(u64, u64)>,
}

impl Qcow2 {
    /// Writes the guest buffers `bufs` (laid out from disk offset `offset`, already checked
    /// against the disk size) in runs, as the module documentation says.
    pub(super) fn write_guest_runs(
        &mut self,
        bufs: &GuestBuffers<'_>,
        offset: u64,
    ) -> io::Result<()> {
        let cs = self.header.cluster_size();
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let end = offset + total;
        let mut run = Run::default();
        let mut piece: Vec<GuestSlice<'_>> = Vec::new();
        let mut bounce = Vec::new();
        // Cursor into `bufs`: buffer index and bytes of it already taken.
        let (mut bi, mut boff) = (0usize, 0usize);
        let mut at = offset;
        while at < end {
            let gc = at >> self.cluster_bits();
            let within = at % cs;
            let n = (cs - within).min(end - at);
            // The slices of `bufs` that carry this cluster's n bytes.
            piece.clear();
            let mut need = n as usize;
            while need > 0 {
                let b = bufs
                    .get(bi)
                    .ok_or_else(|| io::Error::other("guest buffers shorter than their sum"))?;
                let take = (b.len() - boff).min(need);
                if take > 0 {
                    piece.push(b.subslice(boff, take).map_err(io::Error::other)?);
                }
                boff += take;
                need -= take;
                if boff == b.len() {
                    bi += 1;
                    boff = 0;
                }
            }
            // The L2 table first (allocated now if the L1 entry is empty), so that the data
            // clusters allocated below stay contiguous.
            let (t, i) = self.l2_for_write(gc)?;
            let entry = self.l2.get(t).entries[i];
            let cluster = self.decode(gc, entry)?;
            let target = match cluster {
                Cluster::Data { host, copied: true } => Some((host + within, None)),
                // Partly covered and not ours: the rest of the cluster must be filled.
                _ if n != cs => None,
                Cluster::Zero { prealloc: Some(h) } if entry & COPIED != 0 => {
                    Some((
                        h,
                        Some(NewEntry {
                            gc,
                            entry: h | COPIED,
                            free: None,
                        }),
                    ))
                }
                old => {
                    let (rc, file, alloc) = self.writable()?;
                    let host = alloc.alloc(rc, file)?;
                    let free = match old {
                        Cluster::Compressed { offset, len } => {
                            let start = offset & !511;
                            Some((start, offset + len - start))
                        }
                        Cluster::Data { host: h, .. } | Cluster::Zero { prealloc: Some(h) } => {
                            Some((h, cs))
                        }
                        _ => None,
                    };
                    Some((
                        host,
                        Some(NewEntry {
                            gc,
                            entry: host | COPIED,
                            free,
                        }),
                    ))
                }
            };
            match target {
                Some((host, new_entry)) => {
                    if run.len > 0 && run.host + run.len != host {
                        self.write_run(&mut run)?;
                    }
                    if run.len == 0 {
                        run.host = host;
                    }
                    run.len += n;
                    run.slices.append(&mut piece);
                    run.entries.extend(new_entry);
                }
                None => {
                    self.write_run(&mut run)?;
                    bounce.resize(n as usize, 0);
                    let mut o = 0;
                    for s in &piece {
                        s.copy_to(&mut bounce[o..o + s.len()]);
                        o += s.len();
                    }
                    self.write_cluster(gc, within, &bounce)?;
                }
            }
            at += n;
        }
        self.write_run(&mut run)
    }

    /// Writes `run`'s bytes, then points the L2 entries at its new clusters and queues the
    /// clusters they replaced for freeing; empties the run.
    fn write_run(&mut self, run: &mut Run<'_>) -> io::Result<()> {
        if run.len == 0 {
            return Ok(());
        }
        transfer_vectored(self.file.as_raw_fd(), &run.slices, run.host, true)?;
        run.slices.clear();
        run.len = 0;
        for NewEntry { gc, entry, free } in run.entries.drain(..) {
            // The entry first: setting it may flush (a cache eviction), and that flush must
            // not yet drop the old cluster's count.
            self.set_entry(gc, entry)?;
            if let Some(range) = free {
                self.writable()?.0.pending_frees.push(range);
            }
        }
        Ok(())
    }
}
