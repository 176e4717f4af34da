//! What a non-root launcher cannot do for itself, done by the node agent (as upstream's
//! virt-handler prepares a non-root virt-launcher): its run directory, a host directory the
//! kubelet creates as root, is given to [`LAUNCHER_UID`] before the launcher can open its
//! control socket there; the shared image cache is given to it once at the agent's start
//! ([`own_tree`]); the claims' disks in its pod are given to the launcher's own uid
//! before `start`; the tap is made for that uid ([`launcher_ids`]).
//!
//! The disks are reached through the launcher's root (`/proc/<pid>/root`) with `openat2`'s
//! `RESOLVE_IN_ROOT`, never by a path the host resolves: a symlink the pod planted (an absolute
//! `disk.img -> /etc/shadow`, or an image whose `/var/run` links to `/run`) resolves inside the
//! pod's root, and a final component that is not a plain file or directory is refused, so the
//! agent never hands a host file to the pod.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kubevirt_api::core::v1::VirtualMachineInstance;

use crate::vmi::render::claims::{VOLUMES_IN_POD, claim_volumes};
pub use crate::vmi::render::security::LAUNCHER_UID;

/// Why something could not be given to the launcher.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// A file system call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The launcher's process status could not be read.
    #[error("/proc/{pid}/status: no Uid and Gid lines")]
    NoIds {
        /// The launcher's pid.
        pid: u32,
    },
    /// A claim's path in the pod is neither a plain file nor a directory.
    #[error(
        "{path} in the launcher's pod is not a plain file or directory (a symlink?): not giving it to the launcher"
    )]
    NotPlain {
        /// The path in the pod.
        path: String,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OwnerError + 'a {
    move |source| OwnerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the pod's run directory `dir` on the host if the kubelet has not yet, and gives it
/// to [`LAUNCHER_UID`] (mode 0750: the launcher, its group and root). Does nothing when it is
/// already the launcher's.
///
/// # Errors
/// Creating or owning it failed.
pub fn prepare_run_dir(dir: &Path) -> Result<(), OwnerError> {
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let meta = std::fs::symlink_metadata(dir).map_err(io_err("reading", dir))?;
    if meta.uid() == LAUNCHER_UID && meta.gid() == LAUNCHER_UID {
        return Ok(());
    }
    std::os::unix::fs::lchown(dir, Some(LAUNCHER_UID), Some(LAUNCHER_UID))
        .map_err(io_err("owning", dir))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .map_err(io_err("setting the mode of", dir))
}

/// Gives the launchers' shared image cache `dir` on the host, and everything in it an earlier
/// root launcher left, to [`LAUNCHER_UID`] (created if missing). Symlinks are owned as links and
/// never followed.
///
/// # Errors
/// Creating, reading or owning an entry failed.
pub fn own_tree(dir: &Path) -> Result<(), OwnerError> {
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
        if meta.uid() != LAUNCHER_UID || meta.gid() != LAUNCHER_UID {
            std::os::unix::fs::lchown(&path, Some(LAUNCHER_UID), Some(LAUNCHER_UID))
                .map_err(io_err("owning", &path))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(io_err("listing", &path))? {
                stack.push(entry.map_err(io_err("listing", &path))?.path());
            }
        }
    }
    Ok(())
}

/// The real uid and gid of process `pid` (the launcher in its pod).
///
/// # Errors
/// Its status is unreadable or has no ids.
pub fn launcher_ids(pid: u32) -> Result<(u32, u32), OwnerError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&path).map_err(io_err("reading", &path))?;
    parse_ids(&status).ok_or(OwnerError::NoIds { pid })
}

/// The real uid and gid of a `/proc/<pid>/status` text.
fn parse_ids(status: &str) -> Option<(u32, u32)> {
    let first = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((first("Uid:")?, first("Gid:")?))
}

/// Gives the VMI's Filesystem claims in the pod of launcher `pid` to `uid:gid`: each claim's
/// directory (`<VOLUMES_IN_POD>/<volume>`, where the launcher may create `disk.img`) and its
/// `disk.img` when there. Block claims are devices the runtime already made the container
/// user's. Root (`uid` 0) needs nothing.
///
/// # Errors
/// A claim's path could not be opened or owned, or is not a plain file or directory.
pub fn own_claims(
    vmi: &VirtualMachineInstance,
    pid: u32,
    uid: u32,
    gid: u32,
) -> Result<(), OwnerError> {
    if uid == 0 {
        return Ok(());
    }
    own_claims_in(&PathBuf::from(format!("/proc/{pid}/root")), vmi, uid, gid)
}

/// [`own_claims`] with the pod's root at `root`.
fn own_claims_in(
    root: &Path,
    vmi: &VirtualMachineInstance,
    uid: u32,
    gid: u32,
) -> Result<(), OwnerError> {
    let root = open_root(root).map_err(io_err("opening", root))?;
    for claim in claim_volumes(vmi) {
        let dir = format!("{VOLUMES_IN_POD}/{}", claim.volume);
        if own_in(&root, &dir, uid, gid)? == Some(Owned::Dir) {
            own_in(&root, &format!("{dir}/disk.img"), uid, gid)?;
        }
    }
    Ok(())
}

/// What [`own_in`] gave to the launcher.
#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Dir,
    File,
}

/// Gives `path` (absolute in the pod) below `root` to `uid:gid`. `Ok(None)`: nothing there,
/// or a device (a Block claim), left as it is.
fn own_in(root: &OwnedFd, path: &str, uid: u32, gid: u32) -> Result<Option<Owned>, OwnerError> {
    let at = Path::new(path);
    let fd = match open_in_root(root, at) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("opening in the pod", at)(e)),
    };
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open (an O_PATH fd may be fstat'ed); st lives for the call.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io_err("reading in the pod", at)(io::Error::last_os_error()));
    }
    let owned = match st.st_mode & libc::S_IFMT {
        libc::S_IFBLK | libc::S_IFCHR => return Ok(None),
        libc::S_IFDIR => Owned::Dir,
        libc::S_IFREG => Owned::File,
        _ => {
            return Err(OwnerError::NotPlain {
                path: path.to_string(),
            });
        }
    };
    if st.st_uid != uid || st.st_gid != gid {
        // SAFETY: fchownat with AT_EMPTY_PATH changes the file fd refers to (a plain file or
        // directory, checked above); the empty path is a valid C string.
        let rc =
            unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) };
        if rc != 0 {
            return Err(io_err("owning in the pod", at)(io::Error::last_os_error()));
        }
    }
    Ok(Some(owned))
}

/// The pod's root directory (`/proc/<pid>/root`, a magic link this follows) as an O_PATH fd.
fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let c = c_path(root)?;
    // SAFETY: open reads the NUL-terminated path, live for the call; it returns a new fd or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open returned a new fd this function alone owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))
}

/// `openat2(root, path, O_PATH | O_NOFOLLOW | O_CLOEXEC)` resolved inside `root` (symlinks
/// and `..` never leave it), magic links never followed, a trailing symlink opened as itself
/// (and then refused as not plain).
fn open_in_root(root: &OwnedFd, path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    // SAFETY: open_how is plain data; zeroed is its "no flags" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the NUL-terminated path and `how` (its size given), both live for
    // the call; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new fd this function alone owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(test)]
mod tests;
