//! The node's storage root: what it holds ([`observe`]) and the volumes made, grown and removed
//! in it, each step idempotent so a provisioner that crashed half-way finds its work and goes on.
//!
//! A Filesystem volume is the directory `<root>/<name>` (mode 0777); a Block volume is the sparse
//! file `<root>/<name>.img`, attached to a loop device, with the symlink `<root>/<name>` to that
//! device (re-made whenever the device changes: loop numbers do not survive a reboot).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::claim::VolumeMode;
use super::loopdev::{self, LoopDevice, LoopError};

/// Every volume's name starts with this (`pvc-<claim uid>`).
pub const VOLUME_PREFIX: &str = "pvc-";
/// A Block volume's file: `<root>/<name>.img`.
pub const IMAGE_SUFFIX: &str = ".img";
/// Loop devices see sizes in sectors: a Block volume's file is rounded up to this.
pub const SECTOR: u64 = 512;

/// What the storage root holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disk {
    /// Bytes free for unprivileged use on the root's filesystem.
    pub free_bytes: u64,
    /// Volumes present: a directory `<name>` or a file `<name>.img`.
    pub present: BTreeSet<String>,
    /// Symlinks `<name>` and where they point.
    pub links: BTreeMap<String, PathBuf>,
    /// Loop devices backed by a file in the root (also those whose file was deleted), with the
    /// volume name the file belongs to.
    pub loops: Vec<(String, LoopDevice)>,
    /// The snapshots in `<root>/snapshots`, by handle ([`super::snapshots`]).
    pub snapshots: BTreeMap<String, super::snapshots::Meta>,
}

/// A volume to make or grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// `pvc-<claim uid>`.
    pub name: String,
    /// Directory or block device.
    pub mode: VolumeMode,
    /// Its size (a Block volume's file; a Filesystem volume is not limited).
    pub bytes: u64,
}

/// Why the root could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
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
    /// A loop device could not be handled.
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// Something in the root is in the way of a volume.
    #[error("{}: {what}; remove it or pick another --root", path.display())]
    InTheWay {
        /// Which path.
        path: PathBuf,
        /// What is there.
        what: &'static str,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError + use<> {
    let path = path.to_path_buf();
    move |source| DiskError::Io { what, path, source }
}

/// Whether `name` is one of our volume names: `pvc-` and then no path separator, no dot-dot.
pub fn valid_name(name: &str) -> bool {
    name.strip_prefix(VOLUME_PREFIX)
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', '\0']) && rest != "..")
        && !name.contains("..")
}

/// `<root>/<name>.img`.
pub fn image(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}{IMAGE_SUFFIX}"))
}

/// Makes `root` if needed and returns it absolute, without symlinks (loop devices name their
/// files that way).
pub fn prepare_root(root: &Path) -> Result<PathBuf, DiskError> {
    fs::create_dir_all(root).map_err(io_err("creating the storage root", root))?;
    fs::canonicalize(root).map_err(io_err("resolving the storage root", root))
}

/// What `root` (absolute, as [`prepare_root`] returns it) holds.
pub fn observe(root: &Path) -> Result<Disk, DiskError> {
    let stat = rustix::fs::statvfs(root).map_err(|e| DiskError::Io {
        what: "reading the free space of",
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let mut disk = Disk {
        free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
        ..Disk::default()
    };
    for entry in fs::read_dir(root).map_err(io_err("listing", root))? {
        let entry = entry.map_err(io_err("listing", root))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            if valid_name(&file)
                && let Ok(target) = fs::read_link(entry.path())
            {
                disk.links.insert(file, target);
            }
        } else if kind.is_dir() && valid_name(&file) {
            disk.present.insert(file);
        } else if let Some(name) = file.strip_suffix(IMAGE_SUFFIX)
            && kind.is_file()
            && valid_name(name)
        {
            disk.present.insert(name.to_string());
        }
    }
    for l in loopdev::list()? {
        if l.backing.parent() == Some(root)
            && let Some(name) = l
                .backing
                .file_name()
                .and_then(|f| f.to_str()?.strip_suffix(IMAGE_SUFFIX))
                .filter(|n| valid_name(n))
        {
            disk.loops.push((name.to_string(), l));
        }
    }
    // A snapshot directory that cannot be read only hides its snapshots from restores.
    disk.snapshots = super::snapshots::observe(root).unwrap_or_default();
    Ok(disk)
}

/// Makes `volume` in `root` (or finds it made): the directory, or the file attached to a loop
/// device and linked. Returns the Block volume's device.
pub fn make(root: &Path, volume: &Volume) -> Result<Option<PathBuf>, DiskError> {
    let path = root.join(&volume.name);
    match volume.mode {
        VolumeMode::Filesystem => {
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let meta = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
                    if !meta.is_dir() {
                        return Err(DiskError::InTheWay {
                            path,
                            what: "not a directory",
                        });
                    }
                }
                Err(e) => return Err(io_err("creating", &path)(e)),
            }
            // Any pod's user may write the disk image in it (the umask narrowed create_dir).
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
                .map_err(io_err("setting the mode of", &path))?;
            Ok(None)
        }
        VolumeMode::Block => {
            let file = image(root, &volume.name);
            ensure_size(&file, volume.bytes)?;
            attach(root, &volume.name).map(Some)
        }
    }
}

/// Grows `<root>/<name>.img` to at least `bytes` (sparse: no data written), never shrinking it.
fn ensure_size(file: &Path, bytes: u64) -> Result<(), DiskError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(file)
        .map_err(io_err("creating", file))?;
    let want = bytes.div_ceil(SECTOR) * SECTOR;
    let have = f.metadata().map_err(io_err("reading", file))?.len();
    if have < want {
        f.set_len(want).map_err(io_err("sizing", file))?;
    }
    Ok(())
}

/// Attaches the Block volume `name` (if no loop device backs its file yet) and points its
/// symlink at the device; returns the device.
pub fn attach(root: &Path, name: &str) -> Result<PathBuf, DiskError> {
    let file = image(root, name);
    if !file.is_file() {
        return Err(DiskError::InTheWay {
            path: file,
            what: "missing: the Block volume's file is gone",
        });
    }
    let device = match loopdev::backing(&file)?.into_iter().next() {
        Some(d) => d,
        None => loopdev::attach(&file)?,
    };
    link(root, name, &device)?;
    Ok(device)
}

/// Points `<root>/<name>` at `device`, replacing what is there atomically (a rename).
fn link(root: &Path, name: &str, device: &Path) -> Result<(), DiskError> {
    let path = root.join(name);
    if fs::read_link(&path).is_ok_and(|t| t == device) {
        return Ok(());
    }
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        return Err(DiskError::InTheWay {
            path,
            what: "a directory where the Block volume's device link belongs",
        });
    }
    let tmp = root.join(format!(".{name}.link"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(device, &tmp).map_err(io_err("linking", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("linking", &path))
}

/// Grows `volume` to `volume.bytes`: a Block volume's file, and its loop devices told; a
/// Filesystem volume has no size to change.
pub fn grow(root: &Path, volume: &Volume) -> Result<(), DiskError> {
    if volume.mode == VolumeMode::Filesystem {
        return Ok(());
    }
    let file = image(root, &volume.name);
    if !file.is_file() {
        return Err(DiskError::InTheWay {
            path: file,
            what: "missing: the Block volume's file is gone",
        });
    }
    ensure_size(&file, volume.bytes)?;
    for device in loopdev::backing(&file)? {
        loopdev::refresh(&device)?;
    }
    Ok(())
}

/// Removes the volume `name` and its data: its loop devices detached, its link, directory and
/// file deleted. Nothing there is fine.
pub fn remove(root: &Path, name: &str) -> Result<(), DiskError> {
    let file = image(root, name);
    for l in loopdev::list()? {
        if l.backing == file {
            loopdev::detach(&l.device)?;
        }
    }
    let path = root.join(name);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&path).map_err(io_err("removing", &path))?,
        Ok(_) => fs::remove_file(&path).map_err(io_err("removing", &path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("reading", &path)(e)),
    }
    match fs::remove_file(&file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &file)(e)),
        _ => Ok(()),
    }
}

/// Detaches every loop device backed by a file in `root` (when the local control plane stops
/// with its pods: nothing of it stays attached). Returns the devices detached.
pub fn detach_all(root: &Path) -> Result<Vec<PathBuf>, DiskError> {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut detached = Vec::new();
    for l in loopdev::list()? {
        if l.backing.parent() == Some(root.as_path()) {
            loopdev::detach(&l.device)?;
            detached.push(l.device);
        }
    }
    Ok(detached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_pvc_names_are_volumes() {
        assert!(valid_name("pvc-0b1c2d3e-aaaa-bbbb-cccc-000000000001"));
        for bad in [
            "pvc-",
            "pv-1",
            "pvc-../etc",
            "pvc-a/b",
            "pvc-..",
            "data",
            "",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_filesystem_volume_is_a_world_writable_directory_made_once() {
        let dir = kubevirt_testsupport::tempdir("disk-fs");
        let root = prepare_root(dir.path()).unwrap();
        let v = Volume {
            name: "pvc-1".into(),
            mode: VolumeMode::Filesystem,
            bytes: 1 << 20,
        };
        assert_eq!(make(&root, &v).unwrap(), None);
        fs::write(root.join("pvc-1/disk.img"), b"data").unwrap();
        // Again (a provisioner that crashed before creating the PV): the same directory, kept.
        make(&root, &v).unwrap();
        let mode = fs::metadata(root.join("pvc-1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777);
        assert_eq!(fs::read(root.join("pvc-1/disk.img")).unwrap(), b"data");
        let seen = observe(&root).unwrap();
        assert_eq!(seen.present, BTreeSet::from(["pvc-1".to_string()]));
        assert!(seen.free_bytes > 0);
        remove(&root, "pvc-1").unwrap();
        remove(&root, "pvc-1").unwrap();
        assert!(!root.join("pvc-1").exists());
    }

    #[test]
    fn a_file_where_the_directory_belongs_is_reported() {
        let dir = kubevirt_testsupport::tempdir("disk-fs-clash");
        let root = prepare_root(dir.path()).unwrap();
        fs::write(root.join("pvc-2"), b"").unwrap();
        let v = Volume {
            name: "pvc-2".into(),
            mode: VolumeMode::Filesystem,
            bytes: 1,
        };
        let e = make(&root, &v).unwrap_err().to_string();
        assert!(e.contains("pvc-2: not a directory"), "{e}");
    }

    #[test]
    fn a_block_file_is_sparse_rounded_to_sectors_and_only_grows() {
        let dir = kubevirt_testsupport::tempdir("disk-img");
        let file = dir.path().join("pvc-3.img");
        ensure_size(&file, 1000).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().len(), 1024);
        ensure_size(&file, 10 << 20).unwrap();
        ensure_size(&file, 1 << 20).unwrap();
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(meta.len(), 10 << 20);
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&meta) < 64,
            "not sparse"
        );
    }
}
