//! Why a qcow2 image cannot be used: each message names the image and what is wrong.

use std::io;
use std::path::PathBuf;

use super::super::backend::BackendError;

/// Why a disk image (raw or qcow2, with its backing chain) cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Opening, locking or sizing the file failed (as for raw images).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Reading the image's metadata failed.
    #[error("cannot read qcow2 image {path}: {source}")]
    Io {
        /// The image.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The header or a table is not a valid qcow2 structure.
    #[error("qcow2 image {path} is corrupt: {what} (check it with `qemu-img check`)")]
    Corrupt {
        /// The image.
        path: PathBuf,
        /// What is wrong, naming the header field or table.
        what: String,
    },
    /// The image needs a feature this VMM does not implement.
    #[error("qcow2 image {path} uses {what}, which is not supported: convert it with `qemu-img convert -O qcow2`")]
    Unsupported {
        /// The image.
        path: PathBuf,
        /// The feature.
        what: String,
    },
    /// The image may be read but not written in its state.
    #[error("qcow2 image {path} cannot be opened read-write: {why}")]
    NotWritable {
        /// The image.
        path: PathBuf,
        /// Why, and what to do.
        why: String,
    },
    /// The image's backing file does not match the one the caller allowed (or none was given).
    #[error("qcow2 image {path}: {why}")]
    Backing {
        /// The image.
        path: PathBuf,
        /// What differs.
        why: String,
    },
}

impl ImageError {
    pub(crate) fn corrupt(path: &std::path::Path, what: impl Into<String>) -> ImageError {
        ImageError::Corrupt {
            path: path.to_owned(),
            what: what.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: io::Error) -> ImageError {
        ImageError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// An I/O error for corrupt metadata found while the disk is in use (a table entry pointing
/// outside the image, a compressed cluster that does not inflate).
pub(crate) fn corrupt_io(path: &std::path::Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "qcow2 image {} is corrupt: {what} (check it with `qemu-img check`)",
            path.display()
        ),
    )
}
