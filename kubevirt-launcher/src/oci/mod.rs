//! containerDisk images: disk images shipped inside OCI images, pulled from a registry (or read
//! from a local OCI image layout), verified by digest, cached content-addressed, and extracted
//! once. The launcher never writes to the cached image: each VMI gets its own copy-on-write
//! overlay. Registry mirrors come from containerd's `hosts.toml` layout (`mirrors`).

mod disk;
mod mirrors;
mod source;
mod store;
mod writer;

/// Image references live in [`kubevirt_oci`], shared with CDI's registry import.
mod reference {
    pub use kubevirt_oci::{ImageRef, Reference};
}

pub use self::disk::{Manifest, fetch_disk};
pub use self::mirrors::{Endpoint, MirrorConfig, MirrorConfigError, parse_hosts_toml};
pub use self::source::{ImageSource, Layout, Registry};
pub use self::store::Store;
pub use self::writer::ImageBlobs;
pub use kubevirt_oci::{ImageRef, Reference};

use thiserror::Error;

/// What can go wrong getting a containerDisk.
#[derive(Debug, Error)]
pub enum OciError {
    /// The image reference does not parse.
    #[error(transparent)]
    Reference(#[from] kubevirt_oci::ReferenceError),
    /// The registry could not be reached or answered with an error.
    #[error("registry {registry}: {message}")]
    Registry {
        /// Registry host.
        registry: String,
        /// What happened.
        message: String,
    },
    /// A blob's content does not match its digest.
    #[error(
        "blob {expected} has digest {actual}: the download is corrupt or the registry is lying"
    )]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The manifest is not an image manifest this launcher understands.
    #[error("manifest of {image}: {message}")]
    Manifest {
        /// Image.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// No disk image inside.
    #[error("image {0} has no disk: a containerDisk keeps one disk image file under /disk/")]
    NoDisk(String),
    /// Local I/O.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> OciError + '_ {
    move |source| OciError::Io {
        path: path.display().to_string(),
        source,
    }
}
