//! The qcow2 header (versions 2 and 3) and its extensions, parsed and checked against the
//! file before any table is read.

use std::path::Path;

use super::error::ImageError;

/// The first four bytes of every qcow2 image.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Incompatible feature bits (v3).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

/// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Largest L1 table accepted (QEMU's limit): 32 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table accepted (QEMU's limit): 8 MiB.
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Longest backing file name (QEMU's limit).
const MAX_BACKING_NAME: u32 = 1023;
/// Size of a version 2 header; version 3 headers are at least 104 bytes.
const V2_HEADER_LEN: u32 = 72;
const V3_MIN_HEADER_LEN: u32 = 104;

/// A checked qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// The backing file name as the image records it (not trusted: see `open_image`).
    pub backing_name: Option<String>,
    /// The backing file's format from the header extension, when recorded.
    pub backing_format: Option<String>,
    /// log2 of the cluster size (9..=21).
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// L1 table entries.
    pub l1_size: u32,
    /// L1 table offset.
    pub l1_table_offset: u64,
    /// Refcount table offset.
    pub refcount_table_offset: u64,
    /// Refcount table length in clusters.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Incompatible feature bits (0 for v2).
    pub incompatible_features: u64,
    /// Autoclear feature bits (0 for v2).
    pub autoclear_features: u64,
    /// log2 of the refcount width in bits (4 for v2).
    pub refcount_order: u32,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

impl Header {
    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Whether the image is marked dirty (lazy refcounts not yet repaired).
    pub fn dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }

    /// Whether QEMU marked the image corrupt.
    pub fn marked_corrupt(&self) -> bool {
        self.incompatible_features & INCOMPAT_CORRUPT != 0
    }

    /// Parses and checks the header in `first` (the image's first bytes: at least the header,
    /// its extensions and the backing file name, i.e. the first cluster or the whole file when
    /// shorter) of an image `file_len` bytes long. `path` names the image in errors.
    ///
    /// # Errors
    /// [`ImageError::Corrupt`] for a malformed header or a table outside the file,
    /// [`ImageError::Unsupported`] for encryption, external data files, unknown incompatible
    /// features, extended L2 entries or non-zlib compression.
    pub fn parse(path: &Path, first: &[u8], file_len: u64) -> Result<Header, ImageError> {
        let corrupt = |what: String| ImageError::corrupt(path, what);
        let unsupported = |what: &str| ImageError::Unsupported {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        if first.len() < V2_HEADER_LEN as usize {
            return Err(corrupt(format!(
                "the file is {} bytes, shorter than a qcow2 header",
                first.len()
            )));
        }
        if first[..4] != MAGIC {
            return Err(corrupt("the header magic is not QFI\\xfb".into()));
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(unsupported(&format!("qcow2 version {version} (2 and 3 are)")));
        }
        let backing_offset = be64(first, 8);
        let backing_len = be32(first, 16);
        let cluster_bits = be32(first, 20);
        let size = be64(first, 24);
        let crypt_method = be32(first, 32);
        let l1_size = be32(first, 36);
        let l1_table_offset = be64(first, 40);
        let refcount_table_offset = be64(first, 48);
        let refcount_table_clusters = be32(first, 56);
        let nb_snapshots = be32(first, 60);
        if !(9..=21).contains(&cluster_bits) {
            return Err(corrupt(format!(
                "header field cluster_bits is {cluster_bits}, outside 9..=21"
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        if (first.len() as u64) < cluster_size.min(file_len) {
            return Err(corrupt("the first cluster is incomplete".into()));
        }
        let (incompat, autoclear, refcount_order, header_len, compression) = if version == 3 {
            if first.len() < V3_MIN_HEADER_LEN as usize {
                return Err(corrupt(format!(
                    "the file is {} bytes, shorter than a version 3 header",
                    first.len()
                )));
            }
            let header_len = be32(first, 100);
            if header_len < V3_MIN_HEADER_LEN
                || u64::from(header_len) > cluster_size
                || header_len as usize > first.len()
                || !header_len.is_multiple_of(8)
            {
                return Err(corrupt(format!(
                    "header field header_length is {header_len}: it must be a multiple of 8 from {V3_MIN_HEADER_LEN} to the cluster size"
                )));
            }
            let compression = if header_len > V3_MIN_HEADER_LEN {
                first[104]
            } else {
                0
            };
            (be64(first, 72), be64(first, 88), be32(first, 96), header_len, compression)
        } else {
            (0, 0, 4, V2_HEADER_LEN, 0)
        };
        if crypt_method != 0 {
            return Err(unsupported(&format!("encryption (crypt_method {crypt_method})")));
        }
        if incompat & INCOMPAT_DATA_FILE != 0 {
            return Err(unsupported("an external data file"));
        }
        if incompat & INCOMPAT_EXTL2 != 0 {
            return Err(unsupported("extended L2 entries (subclusters)"));
        }
        if incompat & INCOMPAT_COMPRESSION != 0 && compression != 0 {
            return Err(unsupported(&format!(
                "compression type {compression} (only zlib/deflate, type 0, is)"
            )));
        }
        if incompat & INCOMPAT_COMPRESSION == 0 && compression != 0 {
            return Err(corrupt(format!(
                "header field compression_type is {compression} but the compression-type feature bit is clear"
            )));
        }
        let known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION;
        if incompat & !known != 0 {
            return Err(unsupported(&format!(
                "unknown incompatible features {:#x}",
                incompat & !known
            )));
        }
        if refcount_order > 6 {
            return Err(corrupt(format!(
                "header field refcount_order is {refcount_order}, above 6"
            )));
        }
        if size == 0 || !size.is_multiple_of(512) || size > i64::MAX as u64 {
            return Err(corrupt(format!(
                "header field size is {size}: a disk must be a non-zero multiple of 512 bytes"
            )));
        }
        let in_file = |off: u64, len: u64, what: &str| -> Result<(), ImageError> {
            if !off.is_multiple_of(cluster_size) {
                return Err(corrupt(format!(
                    "{what} at offset {off:#x} is not cluster-aligned"
                )));
            }
            match off.checked_add(len) {
                Some(end) if end <= file_len && off != 0 => Ok(()),
                _ => Err(corrupt(format!(
                    "{what} at offset {off:#x} ({len} bytes) lies outside the {file_len}-byte file"
                ))),
            }
        };
        // The L1 table must map the whole disk.
        let l2_entries = cluster_size / 8;
        let needed_l1 = size.div_ceil(cluster_size * l2_entries);
        if u64::from(l1_size) < needed_l1 {
            return Err(corrupt(format!(
                "header field l1_size is {l1_size}, too small for a {size}-byte disk ({needed_l1} needed)"
            )));
        }
        let l1_bytes = u64::from(l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(corrupt(format!("header field l1_size {l1_size} is too large")));
        }
        in_file(l1_table_offset, l1_bytes, "the L1 table")?;
        let rt_bytes = u64::from(refcount_table_clusters) * cluster_size;
        if refcount_table_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES {
            return Err(corrupt(format!(
                "header field refcount_table_clusters is {refcount_table_clusters}"
            )));
        }
        in_file(refcount_table_offset, rt_bytes, "the refcount table")?;

        let backing_name = if backing_offset == 0 {
            None
        } else {
            if backing_len == 0 || backing_len > MAX_BACKING_NAME {
                return Err(corrupt(format!(
                    "header field backing_file_size is {backing_len} (1..={MAX_BACKING_NAME})"
                )));
            }
            let end = backing_offset.checked_add(u64::from(backing_len));
            match end {
                Some(end) if end <= cluster_size && end <= first.len() as u64 => {}
                _ => {
                    return Err(corrupt(format!(
                        "the backing file name at offset {backing_offset:#x} lies outside the first cluster"
                    )));
                }
            }
            let raw = &first[backing_offset as usize..(backing_offset + u64::from(backing_len)) as usize];
            let name = std::str::from_utf8(raw)
                .map_err(|_| corrupt("the backing file name is not UTF-8".into()))?;
            Some(name.to_owned())
        };
        let ext_end = if backing_offset == 0 {
            first.len().min(cluster_size as usize)
        } else {
            backing_offset as usize
        };
        let backing_format = parse_extensions(path, first, header_len as usize, ext_end)?;
        Ok(Header {
            version,
            backing_name,
            backing_format,
            cluster_bits,
            size,
            l1_size,
            l1_table_offset,
            refcount_table_offset,
            refcount_table_clusters,
            nb_snapshots,
            incompatible_features: incompat,
            autoclear_features: autoclear,
            refcount_order,
        })
    }
}

/// Walks the header extensions in `first[start..end]`; returns the backing format.
fn parse_extensions(
    path: &Path,
    first: &[u8],
    start: usize,
    end: usize,
) -> Result<Option<String>, ImageError> {
    let mut at = start;
    let mut backing_format = None;
    while at + 8 <= end {
        let kind = be32(first, at);
        let len = be32(first, at + 4) as usize;
        if kind == EXT_END {
            return Ok(backing_format);
        }
        let data = at + 8;
        let Some(next) = data.checked_add(len.next_multiple_of(8)).filter(|&n| n <= end) else {
            return Err(ImageError::corrupt(
                path,
                format!("header extension {kind:#x} at byte {at} runs past the header area"),
            ));
        };
        match kind {
            EXT_BACKING_FORMAT => {
                let f = std::str::from_utf8(&first[data..data + len]).map_err(|_| {
                    ImageError::corrupt(path, "the backing format extension is not UTF-8")
                })?;
                backing_format = Some(f.to_owned());
            }
            EXT_DATA_FILE => {
                return Err(ImageError::Unsupported {
                    path: path.to_owned(),
                    what: "an external data file".into(),
                });
            }
            _ => {}
        }
        at = next;
    }
    Ok(backing_format)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid v3 header in a 3-cluster (512-byte clusters) image.
    fn v3() -> Vec<u8> {
        let mut b = vec![0u8; 512 * 4];
        b[..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&9u32.to_be_bytes());
        b[24..32].copy_from_slice(&(32u64 << 10).to_be_bytes());
        b[36..40].copy_from_slice(&1u32.to_be_bytes()); // l1_size
        b[40..48].copy_from_slice(&512u64.to_be_bytes());
        b[48..56].copy_from_slice(&1024u64.to_be_bytes());
        b[56..60].copy_from_slice(&1u32.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&104u32.to_be_bytes());
        b
    }

    fn parse(b: &[u8]) -> Result<Header, ImageError> {
        Header::parse(Path::new("disk.qcow2"), b, b.len() as u64)
    }

    #[test]
    fn a_valid_header_parses() {
        let h = parse(&v3()).unwrap();
        assert_eq!((h.version, h.cluster_size(), h.size), (3, 512, 32 << 10));
        assert_eq!(h.backing_name, None);
    }

    #[test]
    fn each_defect_is_refused_with_the_field_named() {
        let cases: &[(usize, &[u8], &str)] = &[
            (0, b"QFI\x00", "magic"),
            (4, &4u32.to_be_bytes(), "version 4"),
            (20, &30u32.to_be_bytes(), "cluster_bits"),
            (32, &1u32.to_be_bytes(), "encryption"),
            (72, &(1u64 << 2).to_be_bytes(), "external data file"),
            (72, &(1u64 << 9).to_be_bytes(), "unknown incompatible"),
            (36, &0u32.to_be_bytes(), "l1_size"),
            (40, &(1u64 << 30).to_be_bytes(), "L1 table"),
            (40, &100u64.to_be_bytes(), "not cluster-aligned"),
            (48, &(1u64 << 40).to_be_bytes(), "refcount table"),
            (100, &7u32.to_be_bytes(), "header_length"),
            (24, &1000u64.to_be_bytes(), "size"),
            (8, &600u64.to_be_bytes(), "backing_file_size"),
        ];
        for (at, bytes, word) in cases {
            let mut b = v3();
            b[*at..*at + bytes.len()].copy_from_slice(bytes);
            let e = parse(&b).unwrap_err().to_string();
            assert!(e.contains(word) && e.contains("disk.qcow2"), "{word}: {e}");
        }
        assert!(parse(&v3()[..50]).is_err());
    }
}
