//! Unwrapping a stream while it flows: gzip, xz and zstd are decompressed, a tar archive gives
//! its first regular file, until the bytes are a disk image (or, for `contentType: archive`, a
//! tar archive). Nothing is buffered beyond the first [`SNIFF_LEN`] bytes of each layer, so a
//! raw image in `.xz` goes from the network to the target without a scratch copy.

use super::format::{DiskFormat, SNIFF_LEN, Sniffed, Wrapper, sniff};
use std::io::{self, Cursor, Read};
use thiserror::Error;

/// Layers of wrapping beyond which a stream is refused (a `.tar.gz` is two).
pub const MAX_LAYERS: usize = 4;

/// A stream with its wrappers removed.
pub struct Unwrapped {
    /// The bytes of the disk image.
    pub reader: Box<dyn Read>,
    /// Their format.
    pub format: DiskFormat,
    /// The wrappers removed, outermost first.
    pub wrappers: Vec<Wrapper>,
}

impl std::fmt::Debug for Unwrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwrapped")
            .field("format", &self.format)
            .field("wrappers", &self.wrappers)
            .finish_non_exhaustive()
    }
}

/// Why a stream could not be unwrapped.
#[derive(Debug, Error)]
pub enum UnwrapError {
    /// Reading (or decompressing) failed.
    #[error("reading the source{}: {source}", inside(.wrappers))]
    Read {
        /// The wrappers being removed.
        wrappers: Vec<Wrapper>,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// There were no bytes.
    #[error("the source holds no data{}", inside(.wrappers))]
    Empty {
        /// The wrappers removed before.
        wrappers: Vec<Wrapper>,
    },
    /// The bytes are recognisably something else.
    #[error("the source is not a disk image: it is {what}{}", inside(.wrappers))]
    NotADisk {
        /// What they are.
        what: &'static str,
        /// The wrappers removed before.
        wrappers: Vec<Wrapper>,
    },
    /// Too many layers.
    #[error("the source is wrapped in more than {MAX_LAYERS} layers ({})", list(.wrappers))]
    TooManyLayers {
        /// The layers seen.
        wrappers: Vec<Wrapper>,
    },
    /// A tar archive without a file to import.
    #[error("the tar archive holds no regular file (the disk image must be a file in it)")]
    TarWithoutFile,
    /// A tar header that does not parse.
    #[error("the tar archive is damaged: {0}")]
    TarDamaged(String),
    /// `contentType: archive` with something other than a tar archive.
    #[error(
        "contentType archive needs a tar archive (optionally gzip, xz or zstd compressed), but the source is {found}"
    )]
    NotAnArchive {
        /// What was found.
        found: String,
    },
}

fn list(wrappers: &[Wrapper]) -> String {
    wrappers
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join(" in ")
}

fn inside(wrappers: &[Wrapper]) -> String {
    if wrappers.is_empty() {
        String::new()
    } else {
        format!(" (inside {})", list(wrappers))
    }
}

/// Removes every wrapper from `reader` until a disk image shows.
pub fn unwrap_disk(reader: Box<dyn Read>) -> Result<Unwrapped, UnwrapError> {
    let mut reader = reader;
    let mut wrappers = Vec::new();
    loop {
        let (head, r) = peek(reader).map_err(|source| UnwrapError::Read {
            wrappers: wrappers.clone(),
            source,
        })?;
        match sniff(&head) {
            Sniffed::Empty => return Err(UnwrapError::Empty { wrappers }),
            Sniffed::NotADisk(what) => return Err(UnwrapError::NotADisk { what, wrappers }),
            Sniffed::Disk(format) => {
                return Ok(Unwrapped {
                    reader: r,
                    format,
                    wrappers,
                });
            }
            Sniffed::Wrapped(w) => {
                wrappers.push(w);
                if wrappers.len() > MAX_LAYERS {
                    return Err(UnwrapError::TooManyLayers { wrappers });
                }
                reader = open_wrapper(w, r, &wrappers)?;
            }
        }
    }
}

/// Removes compression from `reader` until a tar archive shows, and returns the archive's bytes.
pub fn unwrap_archive(reader: Box<dyn Read>) -> Result<Box<dyn Read>, UnwrapError> {
    let mut reader = reader;
    let mut wrappers = Vec::new();
    loop {
        let (head, r) = peek(reader).map_err(|source| UnwrapError::Read {
            wrappers: wrappers.clone(),
            source,
        })?;
        let found = match sniff(&head) {
            Sniffed::Wrapped(Wrapper::Tar) => return Ok(r),
            Sniffed::Wrapped(w) => {
                wrappers.push(w);
                if wrappers.len() > MAX_LAYERS {
                    return Err(UnwrapError::TooManyLayers { wrappers });
                }
                reader = open_wrapper(w, r, &wrappers)?;
                continue;
            }
            Sniffed::Empty => "empty".to_string(),
            Sniffed::NotADisk(what) => what.to_string(),
            Sniffed::Disk(format) => format!("a {format} disk image"),
        };
        return Err(UnwrapError::NotAnArchive {
            found: format!("{found}{}", inside(&wrappers)),
        });
    }
}

/// Reads up to [`SNIFF_LEN`] bytes and gives them back in front of the rest.
fn peek(mut reader: Box<dyn Read>) -> io::Result<(Vec<u8>, Box<dyn Read>)> {
    let mut head = vec![0u8; SNIFF_LEN];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    let replay = Cursor::new(head.clone());
    Ok((head, Box::new(replay.chain(reader))))
}

fn open_wrapper(
    wrapper: Wrapper,
    reader: Box<dyn Read>,
    wrappers: &[Wrapper],
) -> Result<Box<dyn Read>, UnwrapError> {
    Ok(match wrapper {
        // Multi-member gzip (pigz, concatenated files) and multi-stream xz (pixz) are whole
        // images too.
        Wrapper::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Wrapper::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(reader)),
        Wrapper::Zstd => Box::new(zstd::stream::read::Decoder::new(reader).map_err(|source| {
            UnwrapError::Read {
                wrappers: wrappers.to_vec(),
                source,
            }
        })?),
        Wrapper::Tar => first_tar_file(reader)?,
    })
}

/// The first regular file of the tar archive `reader`, as a reader of exactly its bytes.
pub fn first_tar_file(mut reader: Box<dyn Read>) -> Result<Box<dyn Read>, UnwrapError> {
    let read_err = |source| UnwrapError::Read {
        wrappers: vec![Wrapper::Tar],
        source,
    };
    let mut block = [0u8; 512];
    loop {
        match read_block(&mut reader, &mut block).map_err(read_err)? {
            false => return Err(UnwrapError::TarWithoutFile),
            true if block.iter().all(|b| *b == 0) => return Err(UnwrapError::TarWithoutFile),
            true => {}
        }
        let header = tar::Header::from_byte_slice(&block);
        check_checksum(&block, header)?;
        let size = header
            .entry_size()
            .map_err(|e| UnwrapError::TarDamaged(format!("a header's size: {e}")))?;
        match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                return Ok(Box::new(reader.take(size)));
            }
            tar::EntryType::GNUSparse => return super::sparse_tar::expand(header, reader),
            _ => {
                // Directories, links, pax and GNU long-name records: skip their data.
                let padded = size.div_ceil(512).saturating_mul(512);
                let skipped =
                    io::copy(&mut (&mut reader).take(padded), &mut io::sink()).map_err(read_err)?;
                if skipped < padded {
                    return Err(UnwrapError::TarDamaged(
                        "the archive ends inside an entry".into(),
                    ));
                }
            }
        }
    }
}

/// Fills `block`; `false` at a clean end of stream, an error at a partial block.
fn read_block(reader: &mut dyn Read, block: &mut [u8; 512]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < block.len() {
        match reader.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the tar archive ends inside a header",
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The header's checksum: the sum of its bytes with the checksum field read as spaces.
fn check_checksum(block: &[u8; 512], header: &tar::Header) -> Result<(), UnwrapError> {
    let stored = header
        .cksum()
        .map_err(|e| UnwrapError::TarDamaged(format!("a header's checksum field: {e}")))?;
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    if sum != stored {
        return Err(UnwrapError::TarDamaged(format!(
            "a header's checksum is {stored}, its bytes sum to {sum}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn boxed(bytes: Vec<u8>) -> Box<dyn Read> {
        Box::new(Cursor::new(bytes))
    }

    fn read_all(mut r: Box<dyn Read>) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        dir.set_cksum();
        builder.append_data(&mut dir, "images/", &[][..]).unwrap();
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn raw_passes_through_unchanged() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let u = unwrap_disk(boxed(data.clone())).unwrap();
        assert_eq!((u.format, u.wrappers.len()), (DiskFormat::Raw, 0));
        assert_eq!(read_all(u.reader), data);
    }

    #[test]
    fn every_compression_and_tar_is_removed() {
        let disk = [b"QFI\xfb".as_slice(), &[9u8; 3000]].concat();
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&disk).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&disk[..], 1).unwrap();
        let tgz = gzip(&tar_of(&[("images/disk.qcow2", &disk), ("other", b"x")]));
        for (bytes, wrappers) in [
            (gzip(&disk), vec![Wrapper::Gzip]),
            (xz, vec![Wrapper::Xz]),
            (zst, vec![Wrapper::Zstd]),
            (tgz, vec![Wrapper::Gzip, Wrapper::Tar]),
        ] {
            let u = unwrap_disk(boxed(bytes)).unwrap();
            assert_eq!(u.format, DiskFormat::Qcow2);
            assert_eq!(u.wrappers, wrappers);
            assert_eq!(read_all(u.reader), disk);
        }
    }

    #[test]
    fn clear_errors_for_what_cannot_be_imported() {
        let e = unwrap_disk(boxed(gzip(b""))).unwrap_err();
        assert_eq!(e.to_string(), "the source holds no data (inside gzip)");
        let e = unwrap_disk(boxed(b"<!doctype html><p>Not Found".to_vec())).unwrap_err();
        assert!(
            e.to_string()
                .contains("not a disk image: it is an HTML page"),
            "{e}"
        );
        let e = unwrap_disk(boxed(tar_of(&[]))).unwrap_err();
        assert!(matches!(e, UnwrapError::TarWithoutFile), "{e}");
        let mut nested = b"ustar".to_vec();
        for _ in 0..=MAX_LAYERS {
            nested = gzip(&nested);
        }
        let e = unwrap_disk(boxed(nested)).unwrap_err();
        assert!(matches!(e, UnwrapError::TooManyLayers { .. }), "{e}");
    }

    #[test]
    fn a_damaged_tar_header_is_named() {
        let mut t = tar_of(&[("disk.img", b"abc")]);
        t[600] ^= 0xff; // the second header's name
        let e = unwrap_disk(boxed(t)).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn archives_unwrap_to_the_tar_and_refuse_anything_else() {
        let t = tar_of(&[("a", b"1")]);
        assert_eq!(read_all(unwrap_archive(boxed(gzip(&t))).unwrap()), t);
        let Err(e) = unwrap_archive(boxed(gzip(b"QFI\xfb...."))) else {
            panic!("a qcow2 image is not an archive");
        };
        assert_eq!(
            e.to_string(),
            "contentType archive needs a tar archive (optionally gzip, xz or zstd compressed), but the source is a qcow2 disk image (inside gzip)"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_tar_bytes_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            if bytes.len() > 262 {
                bytes[257..262].copy_from_slice(b"ustar");
            }
            if let Ok(u) = unwrap_disk(boxed(bytes)) {
                let mut r = u.reader;
                let _ = io::copy(&mut r, &mut io::sink());
            }
        }

        #[test]
        fn the_first_file_of_any_tar_is_found(
            data in proptest::collection::vec(any::<u8>(), 1..2000),
        ) {
            let t = tar_of(&[("images/disk.img", &data), ("second", b"no")]);
            let r = first_tar_file(boxed(t)).unwrap();
            prop_assert_eq!(read_all(r), data);
        }
    }
}
