//! OCI images without the network: what the launcher's containerDisk pulls and CDI's registry
//! import share. Image references ([`ImageRef`]), manifests and indexes ([`manifest`]: an index
//! followed to linux/amd64), digests and their verification ([`digest`]), a registry's
//! `WWW-Authenticate` challenge ([`challenge`]), and the disk file inside the layers
//! ([`layers`]: gzip/zstd/plain tars, later layers override, whiteouts honoured). Each client
//! brings its own HTTP.

#![deny(missing_docs)]

pub mod challenge;
pub mod digest;
pub mod layers;
pub mod manifest;
mod reference;

pub use challenge::{Challenge, ChallengeError, parse_challenge};
pub use digest::{DigestMismatch, DigestReader, digest_hex, digest_of};
pub use layers::{DiskFinder, LayerError};
pub use manifest::{MANIFEST_TYPES, Manifest, ManifestError, Parsed};
pub use reference::{ImageRef, Reference, ReferenceError};
