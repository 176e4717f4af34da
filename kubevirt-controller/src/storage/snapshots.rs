//! The node's snapshots of its local volumes, on disk: `<root>/snapshots/<handle>/` holds
//! `meta.json` (the size a restore needs, the volume mode, when it was taken) and the copy: the
//! directory `volume/` of a Filesystem volume or the image `volume.img` of a Block one. A
//! snapshot is built under `<root>/snapshots/.<handle>.partial` and renamed into place, so one
//! that is present is complete.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::claim::VolumeMode;
use super::copy::{self, CopyError, Method};
use super::disk::{Volume, image};
use super::loopdev;

/// The directory of the snapshots in a storage root.
pub const SNAPSHOTS: &str = "snapshots";
const META: &str = "meta.json";
const TREE: &str = "volume";
const IMAGE: &str = "volume.img";

/// What a snapshot is (its `meta.json`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The smallest volume a restore needs, in bytes (the source's capacity).
    pub restore_size: u64,
    /// The source volume's mode.
    pub volume_mode: String,
    /// When it was taken, Unix nanoseconds.
    pub creation_time: i64,
    /// The volume it was taken of.
    pub source: String,
}

/// Why a snapshot could not be taken, read, restored or removed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Copying failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// Flushing a Block volume's loop device failed.
    #[error(transparent)]
    Loop(#[from] loopdev::LoopError),
    /// The handle cannot name a snapshot in the root.
    #[error("{0:?} is not a snapshot handle of this driver (one path component expected)")]
    BadHandle(String),
    /// There is no such snapshot on this node.
    #[error("snapshot {handle} is not on this node ({} has no such snapshot)", dir.display())]
    Missing {
        /// The handle.
        handle: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + use<> {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

/// Whether `handle` may name a snapshot directory (no separators, no dot names).
pub fn valid_handle(handle: &str) -> bool {
    !handle.is_empty()
        && !handle.starts_with('.')
        && !handle.contains(['/', '\0'])
        && handle.len() <= 253
}

/// `<root>/snapshots/<handle>`.
pub fn dir(root: &Path, handle: &str) -> Result<PathBuf, SnapshotError> {
    if !valid_handle(handle) {
        return Err(SnapshotError::BadHandle(handle.to_string()));
    }
    Ok(root.join(SNAPSHOTS).join(handle))
}

/// Every complete snapshot in `root`, by handle.
pub fn observe(root: &Path) -> Result<BTreeMap<String, Meta>, SnapshotError> {
    let base = root.join(SNAPSHOTS);
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("listing", &base)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("listing", &base))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !valid_handle(&name) {
            continue;
        }
        if let Ok(meta) = read_meta(&entry.path()) {
            out.insert(name, meta);
        }
    }
    Ok(out)
}

fn read_meta(dir: &Path) -> Result<Meta, SnapshotError> {
    let path = dir.join(META);
    let text = fs::read(&path).map_err(io_err("reading", &path))?;
    serde_json::from_slice(&text).map_err(|e| io_err("parsing", &path)(io::Error::other(e)))
}

/// Takes the snapshot `handle` of `volume` (whose capacity is `volume.bytes`), unless it is
/// there already. Returns its meta and how its files were copied (`None`: it was there).
pub fn take(
    root: &Path,
    volume: &Volume,
    handle: &str,
    now_ns: i64,
) -> Result<(Meta, Option<Method>), SnapshotError> {
    let done = dir(root, handle)?;
    if done.is_dir() {
        return read_meta(&done).map(|m| (m, None));
    }
    let base = root.join(SNAPSHOTS);
    fs::create_dir_all(&base).map_err(io_err("creating", &base))?;
    let partial = base.join(format!(".{handle}.partial"));
    remove_path(&partial)?;
    fs::create_dir(&partial).map_err(io_err("creating", &partial))?;
    let method = match volume.mode {
        VolumeMode::Filesystem => {
            let (reflinked, _) = copy::copy_tree(&root.join(&volume.name), &partial.join(TREE))?;
            if reflinked > 0 {
                Method::Reflink
            } else {
                Method::Sparse
            }
        }
        VolumeMode::Block => {
            let file = image(root, &volume.name);
            // What the guest wrote may still sit in the loop device's page cache: flush it
            // into the file first.
            for device in loopdev::backing(&file)? {
                let d = File::open(&device).map_err(io_err("opening", &device))?;
                d.sync_all().map_err(io_err("flushing", &device))?;
            }
            copy::copy_file(&file, &partial.join(IMAGE))?
        }
    };
    let meta = Meta {
        restore_size: volume.bytes,
        volume_mode: volume.mode.as_str().to_string(),
        creation_time: now_ns,
        source: volume.name.clone(),
    };
    let text = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    let meta_path = partial.join(META);
    fs::write(&meta_path, text).map_err(io_err("writing", &meta_path))?;
    fs::rename(&partial, &done).map_err(io_err("renaming into place", &done))?;
    Ok((meta, Some(method)))
}

/// Fills the new volume `volume` (not made yet) from the snapshot `handle`: a copy of its
/// tree, or of its image grown to `volume.bytes`. The volume is built beside its place and
/// renamed into it, so a restore that stopped half-way starts again.
pub fn restore(root: &Path, handle: &str, volume: &Volume) -> Result<Method, SnapshotError> {
    let snap = dir(root, handle)?;
    let missing = || SnapshotError::Missing {
        handle: handle.to_string(),
        dir: root.join(SNAPSHOTS),
    };
    match volume.mode {
        VolumeMode::Filesystem => {
            let target = root.join(&volume.name);
            if target.is_dir() {
                return Ok(Method::Sparse);
            }
            if !snap.is_dir() {
                return Err(missing());
            }
            let partial = root.join(format!(".{}.restoring", volume.name));
            remove_path(&partial)?;
            let (reflinked, _) = copy::copy_tree(&snap.join(TREE), &partial)?;
            fs::rename(&partial, &target).map_err(io_err("renaming into place", &target))?;
            Ok(if reflinked > 0 {
                Method::Reflink
            } else {
                Method::Sparse
            })
        }
        VolumeMode::Block => {
            let target = image(root, &volume.name);
            if target.is_file() {
                return Ok(Method::Sparse);
            }
            if !snap.is_dir() {
                return Err(missing());
            }
            let partial = root.join(format!(".{}.restoring", volume.name));
            remove_path(&partial)?;
            let method = copy::copy_file(&snap.join(IMAGE), &partial)?;
            let f = File::options()
                .write(true)
                .open(&partial)
                .map_err(io_err("opening", &partial))?;
            let want = volume.bytes.div_ceil(super::disk::SECTOR) * super::disk::SECTOR;
            if f.metadata().map_err(io_err("reading", &partial))?.len() < want {
                f.set_len(want).map_err(io_err("growing", &partial))?;
            }
            fs::rename(&partial, &target).map_err(io_err("renaming into place", &target))?;
            Ok(method)
        }
    }
}

/// Removes the snapshot `handle`; one that is not there is fine.
pub fn remove(root: &Path, handle: &str) -> Result<(), SnapshotError> {
    remove_path(&dir(root, handle)?)
}

fn remove_path(path: &Path) -> Result<(), SnapshotError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err("removing", path)),
        Ok(_) => fs::remove_file(path).map_err(io_err("removing", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("reading", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::{make, prepare_root};

    #[test]
    fn a_filesystem_volume_is_snapshotted_restored_and_removed() {
        let dir = kubevirt_testsupport::tempdir("snapshots-fs");
        let root = prepare_root(dir.path()).unwrap();
        let v = Volume {
            name: "pvc-a".into(),
            mode: VolumeMode::Filesystem,
            bytes: 1 << 30,
        };
        make(&root, &v).unwrap();
        fs::write(root.join("pvc-a/marker"), b"first").unwrap();
        let (meta, method) = take(&root, &v, "snapcontent-1", 42).unwrap();
        assert!(method.is_some());
        assert_eq!(meta.restore_size, 1 << 30);
        assert_eq!(meta.volume_mode, "Filesystem");
        // Taken again: found, not copied.
        assert_eq!(
            take(&root, &v, "snapcontent-1", 43).unwrap(),
            (meta.clone(), None)
        );
        fs::write(root.join("pvc-a/marker"), b"second").unwrap();
        assert_eq!(
            observe(&root).unwrap(),
            BTreeMap::from([("snapcontent-1".into(), meta)])
        );
        let restored = Volume {
            name: "pvc-b".into(),
            ..v
        };
        restore(&root, "snapcontent-1", &restored).unwrap();
        assert_eq!(fs::read(root.join("pvc-b/marker")).unwrap(), b"first");
        remove(&root, "snapcontent-1").unwrap();
        remove(&root, "snapcontent-1").unwrap();
        assert!(observe(&root).unwrap().is_empty());
        let e = restore(&root, "snapcontent-1", &restored);
        assert!(e.is_ok(), "an existing volume is kept: {e:?}");
        let e = restore(
            &root,
            "snapcontent-1",
            &Volume {
                name: "pvc-c".into(),
                ..restored
            },
        );
        assert!(matches!(e, Err(SnapshotError::Missing { .. })), "{e:?}");
    }

    #[test]
    fn a_block_image_is_restored_grown() {
        let dir = kubevirt_testsupport::tempdir("snapshots-img");
        let root = prepare_root(dir.path()).unwrap();
        // The image alone (no loop device: tests run unprivileged).
        let src = image(&root, "pvc-a");
        let f = File::create(&src).unwrap();
        f.set_len(1 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"MARK", 4096).unwrap();
        let v = Volume {
            name: "pvc-a".into(),
            mode: VolumeMode::Block,
            bytes: 1 << 20,
        };
        take(&root, &v, "h", 1).unwrap();
        let grown = Volume {
            name: "pvc-b".into(),
            mode: VolumeMode::Block,
            bytes: 4 << 20,
        };
        restore(&root, "h", &grown).unwrap();
        let data = fs::read(image(&root, "pvc-b")).unwrap();
        assert_eq!(data.len(), 4 << 20);
        assert_eq!(&data[4096..4100], b"MARK");
    }

    #[test]
    fn handles_cannot_leave_the_snapshot_directory() {
        for bad in ["", "..", ".partial", "a/b", "../pvc-1"] {
            assert!(!valid_handle(bad), "{bad}");
            assert!(dir(Path::new("/r"), bad).is_err());
        }
        assert!(valid_handle("snapcontent-0b6e2c5e"));
    }
}
