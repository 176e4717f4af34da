//! virtio-blk: a disk behind a [`BlockBackend`] (raw files, or qcow2 images: `qcow2`, with `open_image` telling them apart by content), with
//! read-only and read-write modes, flush as `fdatasync`, discard, write-zeroes and `serial`,
//! and KubeVirt's cache modes (`cache`: `writethrough` opens the image `O_DSYNC` and offers
//! no flush).
//!
//! Files: `device` (configuration space, features, activation), `queue` (the request
//! queue and broken-ring handling), `request` (one request, checked against the disk),
//! `backend` (the backend trait), `raw` (raw images), `cache` (cache modes), `lock` (image
//! locks and their live-migration handover), `migration` (how each disk migrates),
//! `write_log` (the guest's writes tracked while a migration copies a disk), `error_policy`
//! (a backend error failed to the guest, or held while the VM pauses).

internal_mod!(backend);
internal_mod!(cache);
internal_mod!(device);
mod error_policy;
internal_mod!(queue);
internal_mod!(raw);
internal_mod!(request);
mod lock;
mod migration;
pub mod qcow2;
pub mod write_log;

pub use backend::{BackendError, BlockBackend, GuestBuffers};
pub use cache::CacheMode;
pub use device::Block;
pub use error_policy::{ErrorPolicy, UnknownErrorPolicy};
pub use migration::{DiskMigration, MigrationDisk};
pub(crate) use migration::{activate_all, inactivate_all};
pub use qcow2::{ImageError, ImageFormat, Qcow2, create_overlay, detect_format, open_image};
pub use raw::RawFile;
