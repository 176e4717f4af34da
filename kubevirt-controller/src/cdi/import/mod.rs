//! CDI's importer: a DataVolume's data (an `http` URL, a `registry` image, a `blank` disk, a
//! local file) into a claim, as upstream's `cdi-importer` pod does it.
//!
//! The DataVolume controller runs `kubevirt-controller cdi-importer` in an `importer-<dv>` pod
//! with the claim mounted (Filesystem: at `/data`, the disk is `/data/disk.img`; Block: the
//! device at `/dev/cdi-block-volume`) and upstream's environment (`IMPORTER_SOURCE`,
//! `IMPORTER_ENDPOINT`, ... see [`env`](mod@env)). The import:
//!
//! 1. opens the [`source`] (HTTP with the DataVolume's CA, credentials and headers);
//! 2. [`unwrap`]s it while streaming (gzip, xz, zstd, tar) and sniffs the [`format`](mod@format);
//! 3. streams raw data straight into the [`target`] ([`writer`]), or downloads an image that
//!    must be converted to scratch space, validates it ([`qemu::validate`]: no backing file,
//!    fits) and converts it with `qemu-img convert` ([`qemu`]);
//! 4. grows the disk to the claim's size less the filesystem overhead, and renames it into
//!    place only once complete.
//!
//! [`progress`] is served on [`metrics`]; the result is the [`termination`] message.
//! `contentType: archive` unpacks a tar archive instead ([`archive`]). A DataVolume's
//! `checksum` is verified on the source's bytes before anything is put in place ([`checksum`]).

//! Where this differs from upstream:
//!
//! - the progress is served over plain HTTP (upstream: HTTPS with a throw-away self-signed
//!   certificate, which its controller does not verify either);
//! - an image that must be converted is always downloaded first (upstream streams qcow2 from a
//!   server that supports ranges through nbdkit), to `/scratch` if mounted, else beside the
//!   disk (Block: the temporary directory);
//! - images that refer to other files (a qcow2's external data file, a vmdk's other extents)
//!   are refused, not only those with a backing file;
//! - sources: `http`, `registry` and `none` (blank) of upstream's; `s3`, `gcs`, `imageio`,
//!   `vddk` are refused by name; `file` (a local path) is ours; a registry image's disk is
//!   copied to `/scratch` if mounted, else beside the disk (upstream: always scratch space);
//! - the multi-stage (checkpoint) variables are not read;
//! - `pullMethod: node`'s server is this binary run through a copied loader
//!   ([`node_pull`]), not a separate static `cdi-containerimage-server` binary.

pub mod archive;
pub mod checksum;
pub mod cli;
pub mod env;
pub mod format;
pub mod metrics;
pub mod node_pull;
pub mod pipeline;
pub mod progress;
pub mod qemu;
pub mod source;
mod sparse_tar;
pub mod target;
pub mod termination;
pub mod unwrap;
pub mod writer;

pub use pipeline::{ContentType, ImportError, ImportOutcome, ImportRequest, ImportSource, import};
pub use progress::Progress;
pub use target::Target;
