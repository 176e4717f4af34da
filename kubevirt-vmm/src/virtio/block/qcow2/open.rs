//! Opening a disk image of either format: raw or qcow2 told apart by the file's content
//! (the qcow2 magic), never by its name; a qcow2 image's backing file is the one the caller
//! allows, never a path taken from the image alone.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::super::backend::{BackendError, BlockBackend};
use super::super::raw::RawFile;
use super::super::cache::CacheMode;
use super::super::lock::open_locked;
use super::error::ImageError;
use super::header::{Header, MAGIC};
use super::image::Qcow2;

/// A disk image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Disk offset = file offset.
    Raw,
    /// QEMU copy-on-write version 2 or 3.
    Qcow2,
}

/// Reads `path`'s first bytes and says which format it is: qcow2 when it starts with the
/// qcow2 magic, raw otherwise.
///
/// # Errors
/// When the file cannot be opened or read.
pub fn detect_format(path: &Path) -> Result<ImageFormat, ImageError> {
    let mut f = File::open(path).map_err(|source| BackendError::Open {
        path: path.to_owned(),
        mode: "read-only",
        mode_verb: "read",
        source,
    })?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(ImageError::io(path, e)),
        }
    }
    Ok(if got == 4 && magic == MAGIC {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    })
}

/// Opens the disk image at `path`, raw or qcow2 by its content, in cache mode `cache`.
///
/// `backing` is the chain of backing files the caller allows, nearest first: a qcow2 image
/// that names a backing file must name `backing[0]` (its name is resolved relative to the
/// image's directory, as QEMU does, and both paths compared after resolving symlinks), which
/// is then opened read-only (a shared lock) with `backing[1..]` as its own chain. An image
/// naming a backing file the caller did not give, or given one it does not name, is refused:
/// a guest-controlled image must not make the host open an arbitrary file. The backing file's
/// format is the one the image records (`-F`), else detected by content.
///
/// The image is locked as [`RawFile`] locks: exclusively when writable, shared when
/// read-only. `CacheMode::None` (`O_DIRECT`) applies to raw images only; qcow2 images use
/// the host page cache with the same flush guarantees as `writeback`.
///
/// # Errors
/// [`ImageError`] naming the image and what is wrong.
pub fn open_image(
    path: &Path,
    read_only: bool,
    cache: CacheMode,
    backing: &[&Path],
) -> Result<Box<dyn BlockBackend>, ImageError> {
    open_as(path, None, read_only, cache, backing)
}

fn open_as(
    path: &Path,
    format: Option<ImageFormat>,
    read_only: bool,
    cache: CacheMode,
    backing: &[&Path],
) -> Result<Box<dyn BlockBackend>, ImageError> {
    let format = match format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    if format == ImageFormat::Raw {
        if let Some(b) = backing.first() {
            return Err(ImageError::Backing {
                path: path.to_owned(),
                why: format!(
                    "a raw image has no backing file, but {} was given as one",
                    b.display()
                ),
            });
        }
        return Ok(Box::new(RawFile::open_with_cache(path, read_only, cache)?));
    }
    Ok(Box::new(open_qcow2(path, read_only, cache, backing)?))
}

/// Opens the qcow2 image at `path` (see [`open_image`] for `backing`).
///
/// # Errors
/// [`ImageError`] naming the image and what is wrong.
pub fn open_qcow2(
    path: &Path,
    read_only: bool,
    cache: CacheMode,
    backing: &[&Path],
) -> Result<Qcow2, ImageError> {
    let file = open_locked(path, read_only, cache.open_flags())?;
    let meta = file.metadata().map_err(|e| ImageError::io(path, e))?;
    if !meta.is_file() {
        return Err(BackendError::NotAFile(path.to_owned()).into());
    }
    let file_len = meta.len();
    // The header, its extensions and the backing name lie in the first cluster (≤ 2 MiB).
    let mut first = vec![0u8; file_len.min(2 << 20) as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut first, 0)
        .map_err(|e| ImageError::io(path, e))?;
    let header = Header::parse(path, &first, file_len)?;
    let backing_image = match (&header.backing_name, backing.first()) {
        (None, None) => None,
        (None, Some(given)) => {
            return Err(ImageError::Backing {
                path: path.to_owned(),
                why: format!(
                    "the image has no backing file, but {} was given as one",
                    given.display()
                ),
            });
        }
        (Some(named), None) => {
            return Err(ImageError::Backing {
                path: path.to_owned(),
                why: format!(
                    "the image names backing file {named:?}, which was not given: refused (give the backing file explicitly)"
                ),
            });
        }
        (Some(named), Some(given)) => {
            check_backing(path, named, given)?;
            let format = match header.backing_format.as_deref() {
                None => None,
                Some("raw") => Some(ImageFormat::Raw),
                Some("qcow2") => Some(ImageFormat::Qcow2),
                Some(other) => {
                    return Err(ImageError::Unsupported {
                        path: path.to_owned(),
                        what: format!("a backing file of format {other:?}"),
                    });
                }
            };
            Some(open_as(given, format, true, CacheMode::Writeback, &backing[1..])?)
        }
    };
    Qcow2::new(
        file,
        path,
        header,
        file_len,
        read_only,
        cache == CacheMode::Writethrough,
        backing_image,
    )
}

/// Whether the backing name `named` recorded in `image` is the file `given`.
fn check_backing(image: &Path, named: &str, given: &Path) -> Result<(), ImageError> {
    let dir = image.parent().unwrap_or(Path::new("."));
    let resolved: PathBuf = dir.join(named);
    let same = match (resolved.canonicalize(), given.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(ImageError::Backing {
            path: image.to_owned(),
            why: format!(
                "the image names backing file {named:?} ({}), not the given {}: refused",
                resolved.display(),
                given.display()
            ),
        })
    }
}
