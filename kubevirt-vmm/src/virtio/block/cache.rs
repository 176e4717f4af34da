//! Disk cache modes: KubeVirt's `disk.cache` (`none`, `writethrough`, `writeback`) for
//! [`super::RawFile`].
//!
//! | mode | host file | `VIRTIO_BLK_F_FLUSH` | a write is durable |
//! |---|---|---|---|
//! | `writethrough` | `O_DSYNC` | not offered (no volatile cache) | when it completes |
//! | `writeback` | page cache | offered, flushes `fdatasync` | after the guest's next flush |
//! | `none` | page cache, like `writeback` | offered, flushes `fdatasync` | after the guest's next flush |
//!
//! `none` is QEMU's `O_DIRECT` mode. `O_DIRECT` needs every buffer, offset and length aligned
//! to the host device's logical block size, while a virtio-blk request's buffers may sit
//! anywhere in guest memory, so honouring it would mean bouncing misaligned requests. This VMM
//! serves `none` like `writeback` instead: the durability guarantee a guest sees is the same
//! as with QEMU's `none` (data is durable after the guest's flush, which the device offers);
//! only the host page cache is not bypassed (more host memory used for caching, no
//! double-caching avoidance).

use std::str::FromStr;

/// How a disk image's writes reach stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CacheMode {
    /// Upstream `none`: served like [`CacheMode::Writeback`] (see the module docs).
    None,
    /// Every write is durable before it completes (`O_DSYNC`); the device has no volatile
    /// cache and offers no flush.
    Writethrough,
    /// Writes go to the host page cache; the guest's flushes make them durable.
    #[default]
    Writeback,
}

impl CacheMode {
    /// Whether completed writes may still be lost on a host crash until a flush, i.e.
    /// whether the device must offer `VIRTIO_BLK_F_FLUSH`.
    pub fn has_volatile_cache(self) -> bool {
        self != CacheMode::Writethrough
    }

    /// Extra `open(2)` flags for the image.
    pub fn open_flags(self) -> libc::c_int {
        match self {
            CacheMode::Writethrough => libc::O_DSYNC,
            CacheMode::None | CacheMode::Writeback => 0,
        }
    }

    /// The name KubeVirt uses.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::None => "none",
            CacheMode::Writethrough => "writethrough",
            CacheMode::Writeback => "writeback",
        }
    }
}

impl std::fmt::Display for CacheMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache mode name that is not one of KubeVirt's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown disk cache mode {0:?}: use none, writethrough or writeback")]
pub struct UnknownCacheMode(pub String);

impl FromStr for CacheMode {
    type Err = UnknownCacheMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(CacheMode::None),
            "writethrough" => Ok(CacheMode::Writethrough),
            "writeback" => Ok(CacheMode::Writeback),
            other => Err(UnknownCacheMode(other.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_writethrough_is_synchronous() {
        for mode in [
            CacheMode::None,
            CacheMode::Writethrough,
            CacheMode::Writeback,
        ] {
            assert_eq!(mode.as_str().parse::<CacheMode>(), Ok(mode));
            assert_eq!(
                mode.has_volatile_cache(),
                mode.open_flags() & libc::O_DSYNC == 0
            );
        }
        assert!(!CacheMode::Writethrough.has_volatile_cache());
        assert_eq!(CacheMode::default(), CacheMode::Writeback);
        let e = "unsafe".parse::<CacheMode>().unwrap_err();
        assert!(e.to_string().contains("writethrough"));
    }
}
