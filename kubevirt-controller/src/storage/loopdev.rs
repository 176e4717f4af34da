//! Loop devices: which exist (read from `/sys/block/loop*/loop/backing_file`), and attaching,
//! detaching and resizing them with util-linux's `losetup` (`--find --show` takes a free device
//! and attaches in one step, with the kernel's own retry when another process races for it).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the kernel lists block devices.
const SYS_BLOCK: &str = "/sys/block";
/// What `backing_file` ends with once the file was deleted under the device.
const DELETED: &str = " (deleted)";

/// An attached loop device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub device: PathBuf,
    /// The file behind it.
    pub backing: PathBuf,
    /// The file was deleted (the device holds the last reference to its data).
    pub deleted: bool,
}

/// A `losetup` run that failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// `losetup` could not be run.
    #[error("running losetup (util-linux; is it installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// `losetup` refused.
    #[error("losetup {args}: {stderr}{hint}")]
    Failed {
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
        /// What to do about it, when known.
        hint: &'static str,
    },
    /// The system's loop devices could not be read.
    #[error("reading {SYS_BLOCK}: {0}")]
    Sys(#[source] std::io::Error),
}

/// Every attached loop device.
pub fn list() -> Result<Vec<LoopDevice>, LoopError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(SYS_BLOCK).map_err(LoopError::Sys)? {
        let entry = entry.map_err(LoopError::Sys)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        // A device with nothing attached has no `loop/` directory.
        let Ok(text) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let text = text.trim_end_matches('\n');
        let (path, deleted) = match text.strip_suffix(DELETED) {
            Some(p) => (p, true),
            None => (text, false),
        };
        out.push(LoopDevice {
            device: Path::new("/dev").join(&name),
            backing: PathBuf::from(path),
            deleted,
        });
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}

/// The loop devices backed by `file` (still present).
pub fn backing(file: &Path) -> Result<Vec<PathBuf>, LoopError> {
    Ok(list()?
        .into_iter()
        .filter(|l| !l.deleted && l.backing == file)
        .map(|l| l.device)
        .collect())
}

/// Attaches `file` (an absolute path) to a free loop device; returns the device.
pub fn attach(file: &Path) -> Result<PathBuf, LoopError> {
    let out = losetup(&[OsStr::new("--find"), OsStr::new("--show"), file.as_os_str()])?;
    Ok(PathBuf::from(out.trim()))
}

/// Detaches `device` (the kernel lets the last user finish first).
pub fn detach(device: &Path) -> Result<(), LoopError> {
    losetup(&[OsStr::new("--detach"), device.as_os_str()]).map(drop)
}

/// Makes `device` see its backing file's current size.
pub fn refresh(device: &Path) -> Result<(), LoopError> {
    losetup(&[OsStr::new("--set-capacity"), device.as_os_str()]).map(drop)
}

/// The size of `device` in bytes, as the kernel sees it.
pub fn size(device: &Path) -> std::io::Result<u64> {
    let name = device
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} is no device", device.display())))?;
    let sectors = std::fs::read_to_string(Path::new(SYS_BLOCK).join(name).join("size"))?;
    sectors
        .trim()
        .parse::<u64>()
        .map(|s| s * 512)
        .map_err(std::io::Error::other)
}

fn losetup(args: &[&OsStr]) -> Result<String, LoopError> {
    let out = Command::new("losetup")
        .args(args)
        .output()
        .map_err(LoopError::Spawn)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let hint = if stderr.contains("could not find any free loop device")
        || stderr.contains("cannot find an unused loop device")
    {
        " (every loop device is in use: `losetup -a` lists them; `modprobe loop max_loop=N` or `losetup -f` as root may add more)"
    } else if stderr.contains("Permission denied") || stderr.contains("not permitted") {
        " (loop devices need root, or CAP_SYS_ADMIN in a privileged pod)"
    } else {
        ""
    };
    Err(LoopError::Failed {
        args: args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        stderr,
        hint,
    })
}
