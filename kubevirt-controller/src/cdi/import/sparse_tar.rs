//! GNU tar's sparse members (`tar --sparse`, type `S`, the old GNU format that GNU tar and the
//! tar crate write for a sparse disk image): the archive stores only the data segments and a
//! map of where they go; this expands them back into the whole file while streaming, the gaps
//! read as zeros.

use super::unwrap::UnwrapError;
use std::io::{self, Read};

/// Segments beyond this are refused (a map this long is no disk image's).
const MAX_SEGMENTS: usize = 1 << 20;

/// The expanded contents of the sparse member whose header is `header`; `reader` is positioned
/// just after that header (any extension blocks of the map are read from it first).
pub fn expand(
    header: &tar::Header,
    mut reader: Box<dyn Read>,
) -> Result<Box<dyn Read>, UnwrapError> {
    let damaged = |what: &str, e: io::Error| UnwrapError::TarDamaged(format!("{what}: {e}"));
    let gnu = header
        .as_gnu()
        .ok_or_else(|| UnwrapError::TarDamaged("a sparse member without a GNU header".into()))?;
    let real_size = gnu
        .real_size()
        .map_err(|e| damaged("a sparse member's size", e))?;
    let stored = header
        .entry_size()
        .map_err(|e| damaged("a sparse member's stored size", e))?;
    let mut segments = Vec::new();
    let push = |segments: &mut Vec<(u64, u64)>, s: &tar::GnuSparseHeader| {
        if s.is_empty() {
            return Ok(false);
        }
        let offset = s.offset().map_err(|e| damaged("a sparse map", e))?;
        let length = s.length().map_err(|e| damaged("a sparse map", e))?;
        segments.push((offset, length));
        Ok::<_, UnwrapError>(true)
    };
    for s in &gnu.sparse {
        if !push(&mut segments, s)? {
            break;
        }
    }
    let mut extended = gnu.is_extended();
    while extended {
        let mut ext = tar::GnuExtSparseHeader::new();
        reader
            .read_exact(ext.as_mut_bytes())
            .map_err(|e| damaged("a sparse map's extension", e))?;
        for s in ext.sparse() {
            if !push(&mut segments, s)? {
                break;
            }
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(UnwrapError::TarDamaged(
                "a sparse map of over a million segments".into(),
            ));
        }
        extended = ext.is_extended();
    }
    let mut end = 0u64;
    let mut total = 0u64;
    for &(offset, length) in &segments {
        let bad = offset < end || offset.checked_add(length).is_none_or(|e| e > real_size);
        if bad {
            return Err(UnwrapError::TarDamaged(
                "a sparse map with overlapping or out-of-range segments".into(),
            ));
        }
        end = offset + length;
        total += length;
    }
    if total != stored {
        return Err(UnwrapError::TarDamaged(format!(
            "a sparse member stores {stored} bytes but its map names {total}"
        )));
    }
    Ok(Box::new(Expand {
        inner: reader.take(stored),
        segments,
        next: 0,
        pos: 0,
        real_size,
    }))
}

/// Zeros for the gaps, the stored bytes for the segments.
struct Expand {
    inner: io::Take<Box<dyn Read>>,
    segments: Vec<(u64, u64)>,
    /// The first segment not wholly read.
    next: usize,
    pos: u64,
    real_size: u64,
}

impl Read for Expand {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(offset, length)) = self.segments.get(self.next) {
            if self.pos < offset {
                break;
            }
            if self.pos < offset + length {
                let want = (offset + length - self.pos).min(buf.len() as u64) as usize;
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 && want > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the tar archive ends inside a sparse member",
                    ));
                }
                self.pos += n as u64;
                return Ok(n);
            }
            self.next += 1;
        }
        // A gap, up to the next segment or the end.
        let until = self
            .segments
            .get(self.next)
            .map_or(self.real_size, |&(offset, _)| offset);
        let n = (until - self.pos).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A sparse GNU member for `image` (given as segments) followed by its stored data.
    fn sparse_member(real_size: u64, segments: &[(u64, Vec<u8>)]) -> (tar::Header, Vec<u8>) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        let mut after = Vec::new();
        let mut data = Vec::new();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(real_size);
        let (first, rest) = segments.split_at(segments.len().min(4));
        for (slot, (offset, bytes)) in gnu.sparse.iter_mut().zip(first) {
            slot.set_offset(*offset);
            slot.set_length(bytes.len() as u64);
        }
        gnu.set_is_extended(!rest.is_empty());
        let chunks: Vec<_> = rest.chunks(21).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut ext = tar::GnuExtSparseHeader::new();
            for (slot, (offset, bytes)) in ext.sparse_mut().iter_mut().zip(chunk.iter()) {
                slot.set_offset(*offset);
                slot.set_length(bytes.len() as u64);
            }
            ext.set_is_extended(i + 1 < chunks.len());
            after.extend_from_slice(ext.as_bytes());
        }
        for (_, bytes) in segments {
            data.extend_from_slice(bytes);
        }
        h.set_size(data.len() as u64);
        after.extend_from_slice(&data);
        (h, after)
    }

    fn expanded(header: &tar::Header, rest: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        expand(header, Box::new(io::Cursor::new(rest)))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn gaps_read_as_zeros() {
        let (h, rest) = sparse_member(20, &[(2, b"ab".to_vec()), (10, b"xyz".to_vec())]);
        assert_eq!(expanded(&h, rest), b"\0\0ab\0\0\0\0\0\0xyz\0\0\0\0\0\0\0");
    }

    #[test]
    fn overlapping_maps_are_refused() {
        let (h, rest) = sparse_member(20, &[(5, b"ab".to_vec()), (6, b"x".to_vec())]);
        assert!(expand(&h, Box::new(io::Cursor::new(rest))).is_err());
    }

    proptest! {
        #[test]
        fn any_sparse_file_round_trips(
            pieces in proptest::collection::vec((0u64..300, proptest::collection::vec(1u8..=255, 1..50)), 0..60),
            tail in 0u64..100,
        ) {
            let mut segments = Vec::new();
            let mut image = Vec::new();
            for (gap, bytes) in pieces {
                image.resize(image.len() + gap as usize, 0);
                segments.push((image.len() as u64, bytes.clone()));
                image.extend_from_slice(&bytes);
            }
            image.resize(image.len() + tail as usize, 0);
            let (h, rest) = sparse_member(image.len() as u64, &segments);
            prop_assert_eq!(expanded(&h, rest), image);
        }
    }
}
