//! Guest RAM in a snapshot: one file holding every region back to back, sparse where pages are
//! zero, mapped back `MAP_PRIVATE` so a restored guest faults its pages in from the file as it
//! touches them (and its writes stay in its own copy; the file is never modified).
//!
//! After the RAM comes a 16-byte trailer: the magic `KVRSMEM1` and the snapshot's id, which
//! the state file names too, so a memory file of another snapshot (or a truncated one) is
//! refused at the cost of one small read, without reading the RAM.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vm_memory::bitmap::{AtomicBitmap, NewBitmap};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MmapRegion};

use crate::memory::GuestMemoryMmap;
use crate::memory::GuestRegionMmap;

use super::codec::{CodecError, Decoder, Encoder, field};

/// Granularity of the zero-page check: a page that is all zero is left a hole in the file.
const PAGE: usize = 4096;
/// Bytes copied out of guest memory at a time while writing.
const CHUNK: usize = 1 << 20;
/// Most regions a decoder accepts.
const MAX_REGIONS: usize = 64;
/// The trailer's magic.
const TRAILER_MAGIC: [u8; 8] = *b"KVRSMEM1";
/// The trailer's size: magic and id.
pub const TRAILER_LEN: u64 = 16;

/// Errors writing or mapping the memory file.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Guest memory could not be read (a layout bug: regions are read whole).
    #[error("reading guest memory at {addr:#x} failed: {detail}")]
    ReadGuest {
        /// Guest-physical address.
        addr: u64,
        /// What vm-memory said.
        detail: String,
    },
    /// The memory file is shorter or longer than the state file says.
    #[error(
        "the snapshot memory file {path} is {actual} bytes, the snapshot's RAM layout needs exactly {expected}: it is truncated or belongs to another snapshot"
    )]
    Size {
        /// The file.
        path: PathBuf,
        /// Size it must have.
        expected: u64,
        /// Size it has.
        actual: u64,
    },
    /// The memory file was written with another snapshot than the state file.
    #[error(
        "the snapshot memory file {path} {problem}: keep a snapshot's state and memory files together"
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What is wrong with its trailer.
        problem: String,
    },
    /// The RAM layout in the snapshot differs from the VM's configuration.
    #[error(
        "the snapshot's guest RAM is laid out as {saved}, the VM being built as {configured}: restore with the memory size the snapshot was taken with"
    )]
    Layout {
        /// The snapshot's regions.
        saved: String,
        /// The configuration's regions.
        configured: String,
    },
    /// Mapping a region failed.
    #[error("mapping {size:#x} bytes of {path} at guest {addr:#x} failed: {detail}")]
    Map {
        /// The file.
        path: PathBuf,
        /// Guest-physical start.
        addr: u64,
        /// Region size.
        size: u64,
        /// vm-memory's error.
        detail: String,
    },
}

/// One region of guest RAM and where it sits in the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionLayout {
    /// Guest-physical start.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Offset in the memory file.
    pub file_offset: u64,
}

/// The memory file's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Regions in address order, back to back in the file.
    pub regions: Vec<RegionLayout>,
}

impl std::fmt::Display for MemoryLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .regions
            .iter()
            .map(|r| format!("{:#x} bytes at {:#x}", r.size, r.guest_addr))
            .collect();
        f.write_str(&parts.join(" + "))
    }
}

impl MemoryLayout {
    /// The layout of `ranges` (guest address, size), packed in order.
    pub fn of_ranges(ranges: &[(GuestAddress, u64)]) -> Self {
        let mut offset = 0;
        let regions = ranges
            .iter()
            .map(|&(addr, size)| {
                let r = RegionLayout {
                    guest_addr: addr.0,
                    size,
                    file_offset: offset,
                };
                offset += size;
                r
            })
            .collect();
        MemoryLayout { regions }
    }

    /// The layout of `mem`'s regions.
    pub fn of_memory(mem: &GuestMemoryMmap) -> Self {
        let ranges: Vec<_> = mem.iter().map(|r| (r.start_addr(), r.len())).collect();
        Self::of_ranges(&ranges)
    }

    /// Bytes of guest RAM the memory file holds (its trailer follows).
    pub fn file_size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Appends the layout to a snapshot payload.
    pub fn encode(&self, e: &mut Encoder) {
        e.len(self.regions.len());
        for r in &self.regions {
            e.u64(r.guest_addr);
            e.u64(r.size);
            e.u64(r.file_offset);
        }
    }

    /// Reads the layout back.
    ///
    /// # Errors
    /// [`CodecError`] naming the field that is truncated or too long.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, CodecError> {
        let n = d.len(MAX_REGIONS, &field("memory region count"))?;
        let regions = (0..n)
            .map(|_| {
                Ok(RegionLayout {
                    guest_addr: d.u64(&field("memory region address"))?,
                    size: d.u64(&field("memory region size"))?,
                    file_offset: d.u64(&field("memory region file offset"))?,
                })
            })
            .collect::<Result<_, CodecError>>()?;
        Ok(MemoryLayout { regions })
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MemoryFileError + 'a {
    move |source| MemoryFileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `mem` to `path` (created or truncated): every region at its layout offset, zero
/// pages left as holes, then the trailer with snapshot `id`. Returns the layout and the bytes
/// of RAM actually written.
///
/// # Errors
/// [`MemoryFileError`] naming the file operation that failed.
pub fn write_memory_file(
    mem: &GuestMemoryMmap,
    path: &Path,
    id: u64,
) -> Result<(MemoryLayout, u64), MemoryFileError> {
    let layout = MemoryLayout::of_memory(mem);
    let file = File::create(path).map_err(io("creating", path))?;
    file.set_len(layout.file_size())
        .map_err(io("sizing", path))?;
    let mut trailer = TRAILER_MAGIC.to_vec();
    trailer.extend_from_slice(&id.to_le_bytes());
    file.write_all_at(&trailer, layout.file_size())
        .map_err(io("writing the trailer of", path))?;
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    for region in &layout.regions {
        let mut done = 0u64;
        while done < region.size {
            let len = (region.size - done).min(CHUNK as u64) as usize;
            let addr = GuestAddress(region.guest_addr + done);
            let slice = mem
                .get_slice(addr, len)
                .map_err(|e| MemoryFileError::ReadGuest {
                    addr: addr.0,
                    detail: e.to_string(),
                })?;
            slice.copy_to(&mut buf[..len]);
            // Write each run of non-zero pages with one call.
            let mut page = 0;
            while page < len {
                let is_zero = |p: usize| buf[p..(p + PAGE).min(len)].iter().all(|&b| b == 0);
                if is_zero(page) {
                    page += PAGE;
                    continue;
                }
                let start = page;
                while page < len && !is_zero(page) {
                    page += PAGE;
                }
                let end = page.min(len);
                file.write_all_at(&buf[start..end], region.file_offset + done + start as u64)
                    .map_err(io("writing", path))?;
                written += (end - start) as u64;
            }
            done += len as u64;
        }
    }
    file.sync_all().map_err(io("syncing", path))?;
    Ok((layout, written))
}

/// Checks that the memory file at `path` fits `layout` and was written with snapshot `id`,
/// and opens it.
///
/// # Errors
/// [`MemoryFileError::Size`] for a truncated (or padded) file, [`MemoryFileError::Mismatch`]
/// for one of another snapshot or no memory file at all, [`MemoryFileError::Io`] when it
/// cannot be opened or read.
pub fn open_memory_file(
    path: &Path,
    layout: &MemoryLayout,
    id: u64,
) -> Result<File, MemoryFileError> {
    let file = File::open(path).map_err(io("opening", path))?;
    let actual = file
        .metadata()
        .map_err(io("reading the size of", path))?
        .len();
    let expected = layout.file_size() + TRAILER_LEN;
    if actual != expected {
        return Err(MemoryFileError::Size {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut trailer, layout.file_size())
        .map_err(io("reading the trailer of", path))?;
    let mismatch = |problem: String| MemoryFileError::Mismatch {
        path: path.to_path_buf(),
        problem,
    };
    if trailer[..8] != TRAILER_MAGIC {
        return Err(mismatch(format!(
            "does not end with the trailer \"KVRSMEM1\" (found {:02x?})",
            &trailer[..8]
        )));
    }
    let mut found = [0u8; 8];
    found.copy_from_slice(&trailer[8..]);
    let found = u64::from_le_bytes(found);
    if found != id {
        return Err(mismatch(format!(
            "belongs to snapshot {found:#018x}, the state file is of snapshot {id:#018x}"
        )));
    }
    Ok(file)
}

/// Maps `file` as guest RAM laid out as `layout`, which must equal `configured` (the ranges the
/// VM's configuration gives). Private mappings: nothing is read until the guest touches it,
/// unless `populate` (the VM's `MemoryOptions::prefault`) asks to read it all now.
///
/// # Errors
/// [`MemoryFileError::Layout`] when the layouts differ, [`MemoryFileError::Map`] when `mmap`
/// fails.
pub fn map_memory_file(
    file: &File,
    path: &Path,
    layout: &MemoryLayout,
    configured: &[(GuestAddress, u64)],
    populate: bool,
) -> Result<GuestMemoryMmap, MemoryFileError> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_NORESERVE;
    if populate {
        flags |= libc::MAP_POPULATE;
    }
    let expected = MemoryLayout::of_ranges(configured);
    if *layout != expected {
        return Err(MemoryFileError::Layout {
            saved: layout.to_string(),
            configured: expected.to_string(),
        });
    }
    let map_err = |r: &RegionLayout, detail: String| MemoryFileError::Map {
        path: path.to_path_buf(),
        addr: r.guest_addr,
        size: r.size,
        detail,
    };
    let regions = layout
        .regions
        .iter()
        .map(|r| {
            let clone = file
                .try_clone()
                .map_err(|e| map_err(r, format!("duplicating the fd: {e}")))?;
            let len = usize::try_from(r.size).map_err(|e| map_err(r, e.to_string()))?;
            let mmap: MmapRegion<AtomicBitmap> =
                MmapRegionBuilder::new_with_bitmap(len, AtomicBitmap::with_len(len))
                    .with_file_offset(FileOffset::new(clone, r.file_offset))
                    .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                    .with_mmap_flags(flags)
                    .build()
                    .map_err(|e| map_err(r, e.to_string()))?;
            GuestRegionMmap::new(mmap, GuestAddress(r.guest_addr))
                .ok_or_else(|| map_err(r, "the region wraps the address space".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryFileError::Layout {
        saved: format!("{layout} ({e})"),
        configured: expected.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryOptions, create_guest_memory, ram_ranges};
    use std::os::unix::fs::MetadataExt;
    use vm_memory::Bytes;

    #[test]
    fn memory_round_trips_sparsely_and_restored_writes_stay_private() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("memory");
        let size = 8 << 20;
        let mem = create_guest_memory(size, MemoryOptions::default()).unwrap();
        mem.write_obj(0x1122_3344_5566_7788u64, GuestAddress(0x1000))
            .unwrap();
        mem.write_obj(0xabu8, GuestAddress(size - 1)).unwrap();
        let (layout, written) = write_memory_file(&mem, &path, 7).unwrap();
        assert_eq!(written, 2 * PAGE as u64, "only the two touched pages");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), size + TRAILER_LEN);
        assert!(meta.blocks() * 512 < size / 4, "the file is sparse");

        let err = open_memory_file(&path, &layout, 8).unwrap_err();
        assert!(
            matches!(err, MemoryFileError::Mismatch { .. })
                && err.to_string().contains("0x0000000000000007"),
            "{err}"
        );
        let file = open_memory_file(&path, &layout, 7).unwrap();
        let back = map_memory_file(&file, &path, &layout, &ram_ranges(size), false).unwrap();
        assert_eq!(
            back.read_obj::<u64>(GuestAddress(0x1000)).unwrap(),
            0x1122_3344_5566_7788
        );
        assert_eq!(back.read_obj::<u8>(GuestAddress(size - 1)).unwrap(), 0xab);
        back.write_obj(0u64, GuestAddress(0x1000)).unwrap();
        let again = map_memory_file(&file, &path, &layout, &ram_ranges(size), false).unwrap();
        assert_eq!(
            again.read_obj::<u64>(GuestAddress(0x1000)).unwrap(),
            0x1122_3344_5566_7788,
            "MAP_PRIVATE: the guest's writes never reach the file"
        );
    }

    #[test]
    fn a_truncated_file_and_another_size_are_refused() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("memory");
        let mem = create_guest_memory(4 << 20, MemoryOptions::default()).unwrap();
        let (layout, _) = write_memory_file(&mem, &path, 1).unwrap();
        let file = open_memory_file(&path, &layout, 1).unwrap();
        let err = map_memory_file(&file, &path, &layout, &ram_ranges(8 << 20), false).unwrap_err();
        assert!(matches!(err, MemoryFileError::Layout { .. }), "{err}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let err = open_memory_file(&path, &layout, 1).unwrap_err();
        assert!(
            err.to_string().contains("4096 bytes") && err.to_string().contains("truncated"),
            "{err}"
        );
    }
}
