//! qcow2 images (QEMU copy-on-write, versions 2 and 3) behind [`BlockBackend`]: reads of
//! data, zero, unallocated (backing image or zeroes) and compressed clusters; writes that
//! allocate clusters with copy-on-write; refcounts; a caller-given backing chain; format
//! detection by content.
//!
//! Files: `create` (a new overlay over a backing image), `header` (the header and extensions), `tables` (L1/L2 entries, the L2 cache),
//! `refcount` (refcount table and blocks), `alloc` (cluster allocation), `image` (the
//! backend and its crash-safe flush order), `open` (format detection, backing policy,
//! locking), `error`.
//!
//! [`BlockBackend`]: super::BlockBackend

internal_mod!(alloc);
internal_mod!(create);
internal_mod!(error);
internal_mod!(header);
internal_mod!(image);
internal_mod!(open);
internal_mod!(refcount);
internal_mod!(tables);

pub use create::create_overlay;
pub use error::ImageError;
pub use image::Qcow2;
pub use open::{ImageFormat, detect_format, open_image, open_qcow2};
