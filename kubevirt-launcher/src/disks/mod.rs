//! Preparing each planned disk on the host: the file (or device) the VMM opens, created where
//! upstream creates it, with upstream's lifetime:
//! - `emptyDisk`: a sparse file of `capacity` in the VMI's ephemeral directory: gone with the VMI;
//! - `persistentVolumeClaim`/`dataVolume`: the node's `<volumes>/<volume>/disk.img` (a filesystem
//!   claim; created sparse, of the claim's capacity, when the mount holds none, as upstream:
//!   [`claim`]) or the block device `<volumes>/<volume>` prepared for the pod: it persists;
//! - `hostDisk`: the host file, created sparse for `DiskOrCreate`;
//! - `containerDisk`: the image's one disk file (raw or qcow2, told apart by content), extracted
//!   once per digest into the cache, is the read-only base shared by every VMI that uses it
//!   (opened with a shared lock, never written); each VMI gets a qcow2 overlay in its ephemeral
//!   directory whose backing file is that base, as QEMU's ephemeral disks upstream, so guest
//!   writes vanish with the VMI. The launcher names the backing chain itself when it opens the
//!   overlay ([`PreparedDisk::base`]): a backing path recorded inside an image is never trusted.

mod claim;
mod projected;

use crate::oci::{ImageRef, ImageSource, OciError, Store, fetch_disk};
use crate::plan::{DiskPlan, DiskSource};
use kubevirt_vmm::virtio::block::{
    CacheMode, ImageError, create_overlay, detect_format, open_image,
};
use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where things live for one VMI.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Per-VMI scratch space, removed when the VMI ends.
    pub ephemeral_dir: PathBuf,
    /// Where the node prepares claims: `<volumes_dir>/<volume name>`.
    pub volumes_dir: PathBuf,
    /// The containerDisk cache.
    pub images: Store,
}

/// A disk ready for the VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDisk {
    /// Disk name.
    pub name: String,
    /// What the VMM opens (for a containerDisk: the qcow2 overlay).
    pub path: PathBuf,
    /// Read-only for the guest.
    pub readonly: bool,
    /// The read-only base of a copy-on-write overlay: the one backing file `path` may name
    /// (open it with `open_image(path, .., &[base])`).
    pub base: Option<PathBuf>,
    /// Removed when the VMI ends.
    pub ephemeral: bool,
}

/// Why a disk cannot be prepared.
#[derive(Debug, Error)]
pub enum PrepareError {
    /// The claim the node should have prepared is not there.
    #[error(
        "volume {volume}: neither {file} nor the block device {device} exists; the node has not prepared the claim"
    )]
    ClaimMissing {
        /// Volume name.
        volume: String,
        /// Expected file.
        file: String,
        /// Expected device.
        device: String,
    },
    /// A Filesystem claim's mount holds no `disk.img` and the VMI does not say the claim's
    /// capacity, the size to create it with.
    #[error(
        "volume {volume}: {file} does not exist and the VMI's status.volumeStatus gives no persistentVolumeClaimInfo.capacity to create it with"
    )]
    ClaimCapacityUnknown {
        /// Volume name.
        volume: String,
        /// Expected file.
        file: String,
    },
    /// The claim's filesystem has too little space for its `disk.img` (upstream's wording).
    #[error(
        "volume {volume}: unable to create {path}, not enough space, demanded size {demanded} B is bigger than available space {available} B, also after taking {toleration} % toleration into account"
    )]
    NotEnoughSpace {
        /// Volume name.
        volume: String,
        /// The `disk.img` not created.
        path: String,
        /// The claim's capacity.
        demanded: u64,
        /// What the filesystem has, less the reserve.
        available: u64,
        /// The tolerated shortfall, percent.
        toleration: u64,
    },
    /// A `Disk`-type hostDisk does not exist.
    #[error("volume {volume}: hostDisk {path} does not exist (use type DiskOrCreate to create it)")]
    HostDiskMissing {
        /// Volume name.
        volume: String,
        /// Path.
        path: String,
    },
    /// The containerDisk could not be fetched.
    #[error("volume {volume}: {source}")]
    Image {
        /// Volume name.
        volume: String,
        /// Cause.
        source: OciError,
    },
    /// A file operation failed.
    #[error("volume {volume}: {path}: {source}")]
    Io {
        /// Volume name.
        volume: String,
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The containerDisk's image is not a usable base, or its overlay cannot be created.
    #[error("volume {volume}: {source}")]
    Overlay {
        /// Volume name.
        volume: String,
        /// Cause.
        #[source]
        source: ImageError,
    },
    /// A ConfigMap's or Secret's keys do not fit an ISO image.
    #[error("volume {volume}: {source}")]
    Iso {
        /// Volume name.
        volume: String,
        /// Why.
        #[source]
        source: crate::cloudinit::iso9660::IsoError,
    },
    /// The directory a ConfigMap or Secret is projected into is missing.
    #[error(
        "volume {volume}: {kind} is not projected into {dir}: the node (or, standalone, you) writes one file per key there; mark the volume optional to boot without it"
    )]
    ProjectionMissing {
        /// Volume name.
        volume: String,
        /// `ConfigMap` or `Secret`.
        kind: String,
        /// Where its keys were expected.
        dir: String,
    },
    /// This source is not a plain disk (cloud-init disks are built elsewhere).
    #[error("volume {0}: this source is generated, not prepared as a file")]
    Generated(String),
}

fn sparse(volume: &str, path: &Path, size: u64) -> Result<(), PrepareError> {
    let io = |source| PrepareError::Io {
        volume: volume.into(),
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    if f.metadata().map_err(io)?.len() < size {
        f.set_len(size).map_err(io)?;
    }
    Ok(())
}

/// Creates the qcow2 `overlay` over the containerDisk base `base` (raw or qcow2 by content;
/// a qcow2 base must stand alone: a backing file inside a container image is refused).
fn create_overlay_for(volume: &str, base: &Path, overlay: &Path) -> Result<(), PrepareError> {
    let err = |source| PrepareError::Overlay {
        volume: volume.into(),
        source,
    };
    let base = base.canonicalize().map_err(|source| PrepareError::Io {
        volume: volume.into(),
        path: base.display().to_string(),
        source,
    })?;
    let format = detect_format(&base).map_err(err)?;
    // The disk's size as the guest sees it: a qcow2 base's virtual size (opening it also
    // checks its header and refuses one that names a backing file), a raw base's length
    // rounded up to a sector (the tail reads as zeroes).
    let size = open_image(&base, true, CacheMode::Writeback, &[])
        .map_err(err)?
        .size()
        .next_multiple_of(512);
    if let Some(dir) = overlay.parent() {
        fs::create_dir_all(dir).map_err(|source| PrepareError::Io {
            volume: volume.into(),
            path: dir.display().to_string(),
            source,
        })?;
    }
    create_overlay(overlay, &base, format, size.max(512)).map_err(err)
}

/// Prepare `disk` under `layout`, pulling containerDisks from `images`.
pub fn prepare(
    disk: &DiskPlan,
    layout: &Layout,
    images: &dyn ImageSource,
) -> Result<PreparedDisk, PrepareError> {
    let name = disk.name.clone();
    let plain = |path: PathBuf, ephemeral: bool| PreparedDisk {
        name: name.clone(),
        path,
        readonly: disk.readonly,
        base: None,
        ephemeral,
    };
    match &disk.source {
        DiskSource::EmptyDisk { capacity } => {
            let path = layout
                .ephemeral_dir
                .join("empty-disks")
                .join(format!("{name}.img"));
            sparse(&name, &path, *capacity)?;
            Ok(plain(path, true))
        }
        DiskSource::PersistentVolumeClaim { capacity, .. }
        | DiskSource::DataVolume { capacity, .. } => {
            let dir = layout.volumes_dir.join(&name);
            let file = dir.join("disk.img");
            if file.is_file() {
                return Ok(plain(file, false));
            }
            let device = layout.volumes_dir.join(&name);
            let kind = fs::metadata(&device).map(|m| m.file_type());
            if kind
                .as_ref()
                .is_ok_and(std::os::unix::fs::FileTypeExt::is_block_device)
            {
                return Ok(plain(device, false));
            }
            if kind.is_ok_and(|k| k.is_dir()) && !file.exists() {
                // The claim's mount without a disk: create it, as upstream's launcher does.
                let Some(capacity) = capacity else {
                    return Err(PrepareError::ClaimCapacityUnknown {
                        volume: name,
                        file: file.display().to_string(),
                    });
                };
                claim::create_disk_img(&name, &dir, &file, *capacity)?;
                return Ok(plain(file, false));
            }
            Err(PrepareError::ClaimMissing {
                volume: name,
                file: file.display().to_string(),
                device: device.display().to_string(),
            })
        }
        DiskSource::HostDisk {
            path,
            create,
            capacity,
        } => {
            let p = PathBuf::from(path);
            if !p.exists() {
                match (create, capacity) {
                    (true, Some(size)) => sparse(&name, &p, *size)?,
                    _ => {
                        return Err(PrepareError::HostDiskMissing {
                            volume: name,
                            path: path.clone(),
                        });
                    }
                }
            }
            Ok(plain(p, false))
        }
        DiskSource::ContainerDisk { image, path } => {
            let r: ImageRef = image.parse().map_err(|e| PrepareError::Image {
                volume: name.clone(),
                source: OciError::from(e),
            })?;
            let base =
                fetch_disk(images, &layout.images, &r, path.as_deref()).map_err(|source| {
                    PrepareError::Image {
                        volume: name.clone(),
                        source,
                    }
                })?;
            let overlay = layout
                .ephemeral_dir
                .join("overlays")
                .join(format!("{name}.qcow2"));
            create_overlay_for(&name, &base, &overlay)?;
            Ok(PreparedDisk {
                name,
                path: overlay,
                readonly: disk.readonly,
                base: Some(base),
                ephemeral: true,
            })
        }
        DiskSource::ConfigMap {
            optional,
            volume_label,
            ..
        } => projected::prepare(
            &name,
            "ConfigMap",
            *optional,
            volume_label.as_deref(),
            layout,
        ),
        DiskSource::Secret {
            optional,
            volume_label,
            ..
        } => projected::prepare(&name, "Secret", *optional, volume_label.as_deref(), layout),
        DiskSource::CloudInitNoCloud(_) | DiskSource::CloudInitConfigDrive(_) => {
            Err(PrepareError::Generated(name))
        }
    }
}

/// Remove what only lived for the VMI (emptyDisks, overlays): called when the VMI ends.
pub fn cleanup(layout: &Layout) -> std::io::Result<()> {
    match fs::remove_dir_all(&layout.ephemeral_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Layout as OciLayout;
    use kubevirt_vmm::virtio::block::CacheMode;

    fn disk(name: &str, source: DiskSource) -> DiskPlan {
        DiskPlan {
            name: name.into(),
            source,
            readonly: false,
            serial: None,
            cache: CacheMode::None,
            error_policy: kubevirt_vmm::virtio::block::ErrorPolicy::Stop,
            boot_order: None,
        }
    }

    /// A layout under a fresh test directory (removed when the test passes).
    fn layout(tag: &str) -> (kubevirt_testsupport::TestDir, Layout) {
        let root = kubevirt_testsupport::tempdir(&format!("disks-{tag}"));
        let layout = Layout {
            ephemeral_dir: root.join("vmi"),
            volumes_dir: root.join("volumes"),
            images: Store::new(root.join("cache")),
        };
        (root, layout)
    }

    #[test]
    fn empty_disks_are_sparse_and_vanish_claims_persist() {
        let (_root, l) = layout("lifetimes");
        let src = OciLayout::new(l.ephemeral_dir.join("none"));
        let empty = prepare(
            &disk("scratch", DiskSource::EmptyDisk { capacity: 64 << 20 }),
            &l,
            &src,
        )
        .unwrap();
        let meta = fs::metadata(&empty.path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&meta) < 64,
            "sparse, not written out"
        );
        let claim_file = l.volumes_dir.join("data").join("disk.img");
        let err = prepare(
            &disk(
                "data",
                DiskSource::PersistentVolumeClaim {
                    claim: "pvc".into(),
                    capacity: None,
                },
            ),
            &l,
            &src,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("has not prepared the claim"),
            "{err}"
        );
        fs::create_dir_all(claim_file.parent().unwrap()).unwrap();
        fs::write(&claim_file, b"persistent").unwrap();
        let claim = prepare(
            &disk(
                "data",
                DiskSource::PersistentVolumeClaim {
                    claim: "pvc".into(),
                    capacity: None,
                },
            ),
            &l,
            &src,
        )
        .unwrap();
        assert!(!claim.ephemeral);
        cleanup(&l).unwrap();
        assert!(!empty.path.exists(), "an emptyDisk vanishes with the VMI");
        assert_eq!(
            fs::read(&claim_file).unwrap(),
            b"persistent",
            "a claim persists"
        );
    }

    #[test]
    fn a_claim_mount_without_disk_img_gets_one_of_the_claims_capacity() {
        let (_root, l) = layout("claim-create");
        let src = OciLayout::new(l.ephemeral_dir.join("none"));
        fs::create_dir_all(l.volumes_dir.join("data")).unwrap();
        let claim = |capacity| {
            disk(
                "data",
                DiskSource::DataVolume {
                    name: "dv".into(),
                    capacity,
                },
            )
        };
        let e = prepare(&claim(None), &l, &src).unwrap_err();
        assert!(
            matches!(&e, PrepareError::ClaimCapacityUnknown { volume, .. } if volume == "data"),
            "{e}"
        );
        let p = prepare(&claim(Some(64 << 20)), &l, &src).unwrap();
        assert_eq!(p.path, l.volumes_dir.join("data/disk.img"));
        assert_eq!(fs::metadata(&p.path).unwrap().len(), 64 << 20);
        fs::write(&p.path, b"written").unwrap();
        let again = prepare(&claim(Some(128 << 20)), &l, &src).unwrap();
        assert_eq!(fs::read(&again.path).unwrap(), b"written", "never replaced");
    }

    #[test]
    fn host_disks_are_used_or_created_as_asked() {
        let (_root, l) = layout("hostdisk");
        let src = OciLayout::new(l.ephemeral_dir.join("none"));
        let path = l
            .volumes_dir
            .join("host")
            .join("h.img")
            .display()
            .to_string();
        let missing = disk(
            "h",
            DiskSource::HostDisk {
                path: path.clone(),
                create: false,
                capacity: None,
            },
        );
        assert!(matches!(
            prepare(&missing, &l, &src),
            Err(PrepareError::HostDiskMissing { .. })
        ));
        let create = disk(
            "h",
            DiskSource::HostDisk {
                path: path.clone(),
                create: true,
                capacity: Some(1 << 20),
            },
        );
        assert_eq!(
            fs::metadata(prepare(&create, &l, &src).unwrap().path)
                .unwrap()
                .len(),
            1 << 20
        );
    }
}
