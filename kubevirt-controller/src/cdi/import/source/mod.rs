//! Where an import's bytes come from.
//!
//! A [`Source`] opens a byte stream (and says how long it is, when it knows, for progress). The
//! pipeline does the rest: unwrapping, format detection, conversion. Sources:
//! [`http::HttpSource`] (a DataVolume's `http` source), [`registry::RegistrySource`] (its
//! `registry` source: the disk under `/disk` of a container image, copied out of the layers to
//! scratch space and then read as a local file) and [`file::FileSource`] (a local file, for
//! tests, clones and the upload server). `blank` has no bytes at all and is not a source: see
//! [`super::ImportSource::Blank`].

pub mod file;
pub mod http;
pub mod proxy;
pub mod registry;
pub mod tls;

use std::io::Read;
use std::path::Path;
use thiserror::Error;

/// An opened stream.
pub struct Stream {
    /// The bytes.
    pub reader: Box<dyn Read>,
    /// How many there are, if known.
    pub length: Option<u64>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// A place an import reads from.
pub trait Source: std::fmt::Debug + Send {
    /// Opens the data for reading, from the start.
    fn open(&mut self) -> Result<Stream, SourceError>;

    /// A local file holding exactly the data, which `qemu-img` may read in place of a scratch
    /// copy; `None` (the default) for remote sources.
    fn local_path(&self) -> Option<&Path> {
        None
    }

    /// What it is, for messages (a URL, a path).
    fn describe(&self) -> String;
}

/// Failures of opening a source.
#[derive(Debug, Error)]
pub enum SourceError {
    /// An HTTP source failed.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// A registry source failed.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// A local file could not be opened.
    #[error("opening {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}
