//! Creating an empty qcow2 version 3 overlay over a backing image: what `qemu-img create -f
//! qcow2 -b BASE -F FORMAT` writes, without needing qemu-img on the host.
//!
//! The new image has 64 KiB clusters and 16-bit refcounts laid out as QEMU does: the header
//! (with the backing-format extension and the backing name) in cluster 0, the refcount table
//! in cluster 1, its first refcount block in cluster 2, then the L1 table (all zero: every
//! cluster reads from the backing image until the guest writes it).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use super::error::ImageError;
use super::header::MAGIC;
use super::open::ImageFormat;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const HEADER_LEN: u32 = 112;
const REFCOUNT_ORDER: u32 = 4;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Longest backing name a qcow2 header may carry (QEMU's limit).
const MAX_BACKING_NAME: usize = 1023;

/// Writes a new, empty qcow2 image at `path` (replacing any file there) of `size` bytes whose
/// backing file is `backing` in format `backing_format`. The backing name is recorded as given:
/// pass an absolute path so the image does not depend on the directory it is opened from. Open
/// it with [`super::open_image`] giving `backing` as its chain.
///
/// # Errors
/// [`ImageError::Io`] when the file cannot be written; [`ImageError::Unsupported`] for a size
/// that is zero, not a multiple of 512, or too large, or a backing name longer than 1023 bytes.
pub fn create_overlay(
    path: &Path,
    backing: &Path,
    backing_format: ImageFormat,
    size: u64,
) -> Result<(), ImageError> {
    let unsupported = |what: String| ImageError::Unsupported {
        path: path.to_owned(),
        what,
    };
    let name = backing.as_os_str().as_encoded_bytes();
    if name.is_empty() || name.len() > MAX_BACKING_NAME {
        return Err(unsupported(format!(
            "a backing file name of {} bytes (1..={MAX_BACKING_NAME})",
            name.len()
        )));
    }
    if size == 0 || !size.is_multiple_of(512) {
        return Err(unsupported(format!(
            "a disk size of {size} bytes (a non-zero multiple of 512)"
        )));
    }
    let l2_entries = CLUSTER / 8;
    let l1_size = size.div_ceil(CLUSTER * l2_entries);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER).max(1);
    let clusters = 3 + l1_clusters;
    // One refcount block of 16-bit entries covers CLUSTER / 2 clusters (2 GiB of file).
    if l1_size > u64::from(u32::MAX) || clusters > CLUSTER / 2 {
        return Err(unsupported(format!("a disk size of {size} bytes")));
    }
    let format = match backing_format {
        ImageFormat::Raw => &b"raw"[..],
        ImageFormat::Qcow2 => &b"qcow2"[..],
    };

    let mut image = vec![0u8; (clusters * CLUSTER) as usize];
    let put32 = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    // Header extensions follow the header; the backing name follows them.
    let mut at = HEADER_LEN as usize;
    put32(&mut image, at, EXT_BACKING_FORMAT);
    put32(&mut image, at + 4, format.len() as u32);
    image[at + 8..at + 8 + format.len()].copy_from_slice(format);
    at += 8 + format.len().next_multiple_of(8);
    at += 8; // the end-of-extensions marker: type 0, length 0
    let backing_offset = at;
    image[at..at + name.len()].copy_from_slice(name);

    let h = &mut image;
    h[..4].copy_from_slice(&MAGIC);
    put32(h, 4, 3);
    put64(h, 8, backing_offset as u64);
    put32(h, 16, name.len() as u32);
    put32(h, 20, CLUSTER_BITS);
    put64(h, 24, size);
    put32(h, 32, 0); // no encryption
    put32(h, 36, l1_size as u32);
    put64(h, 40, 3 * CLUSTER); // L1 table
    put64(h, 48, CLUSTER); // refcount table
    put32(h, 56, 1);
    put32(h, 60, 0); // no snapshots
    put64(h, 64, 0);
    put64(h, 72, 0); // incompatible features
    put64(h, 80, 0); // compatible features
    put64(h, 88, 0); // autoclear features
    put32(h, 96, REFCOUNT_ORDER);
    put32(h, 100, HEADER_LEN);
    // Byte 104: compression type 0 (zlib); the rest of the 112 bytes is padding.

    // Refcount table entry 0 → the refcount block in cluster 2, which counts every cluster
    // written here once.
    put64(h, CLUSTER as usize, 2 * CLUSTER);
    for c in 0..clusters as usize {
        let at = 2 * CLUSTER as usize + 2 * c;
        h[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }

    let io = |e| ImageError::io(path, e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io)?;
    f.write_all(&image).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::block::{CacheMode, open_image};

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kv-qcow2-create-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_overlay_reads_its_base_and_keeps_writes_to_itself() {
        let d = dir("raw");
        let base = d.join("base.img");
        let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&base, &data).unwrap();
        let top = d.join("top.qcow2");
        create_overlay(&top, &base, ImageFormat::Raw, data.len() as u64).unwrap();
        let mut img = open_image(&top, false, CacheMode::Writeback, &[&base]).unwrap();
        assert_eq!(img.size(), data.len() as u64);
        let mut buf = vec![0u8; 8192];
        img.read_at(&mut buf, 70_000).unwrap();
        assert_eq!(buf, data[70_000..78_192]);
        img.write_at(&[0xab; 512], 70_000).unwrap();
        img.flush().unwrap();
        img.read_at(&mut buf, 70_000).unwrap();
        assert_eq!(buf[..512], [0xab; 512]);
        assert_eq!(buf[512..], data[70_512..78_192]);
        drop(img);
        assert_eq!(std::fs::read(&base).unwrap(), data, "the base is never written");
        // Reopened, the write is still there.
        let mut img = open_image(&top, true, CacheMode::Writeback, &[&base]).unwrap();
        img.read_at(&mut buf, 70_000).unwrap();
        assert_eq!(buf[..512], [0xab; 512]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sizes_and_names_out_of_range_are_refused() {
        let d = dir("bad");
        let top = d.join("top.qcow2");
        let base = d.join("b");
        for size in [0, 1000] {
            let err = create_overlay(&top, &base, ImageFormat::Raw, size).unwrap_err();
            assert!(err.to_string().contains("multiple of 512"), "{err}");
        }
        let long = d.join("x".repeat(1100));
        assert!(create_overlay(&top, &long, ImageFormat::Raw, 1 << 20).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
