//! Image locking: two guests must never write one disk.
//!
//! Like QEMU's image locking, every image a VM opens carries an open-file-description (OFD)
//! lock over the whole file: a read-write open takes it exclusively, a read-only open shared.
//! So a second VM (in this process or any other) that opens an image another VM writes is
//! refused, and so is a writer while readers hold it. OFD locks belong to the open file, not
//! to the process: they are released when the image is closed, also when the process dies
//! (kill -9 included), and they conflict between two opens in one process.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::backend::BackendError;

/// Opens the image at `path` read-only or read-write with the extra `open(2)` `flags`, and
/// locks it: shared for read-only, exclusive for read-write.
///
/// # Errors
/// [`BackendError::Open`] when it does not open, [`BackendError::InUse`] when another open holds
/// a conflicting lock, [`BackendError::Lock`] when locking fails otherwise.
pub(crate) fn open_locked(
    path: &Path,
    read_only: bool,
    flags: libc::c_int,
) -> Result<File, BackendError> {
    let (mode, mode_verb) = if read_only {
        ("read-only", "read")
    } else {
        ("read-write", "read and write")
    };
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| BackendError::Open {
            path: path.to_owned(),
            mode,
            mode_verb,
            source,
        })?;
    let kind = if read_only {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    match try_lock(&file, kind) {
        Ok(true) => Ok(file),
        Ok(false) => Err(BackendError::InUse {
            path: path.to_owned(),
            held: if read_only {
                "it is open for writing elsewhere"
            } else {
                "it is open elsewhere"
            },
        }),
        Err(source) => Err(BackendError::Lock {
            path: path.to_owned(),
            source,
        }),
    }
}

/// How an image is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// Read-only users may share the image.
    Shared,
    /// A writer holds the image alone.
    Exclusive,
}

/// Takes the lock of `kind` on the whole of `file` without waiting.
///
/// Returns `Ok(false)` when another open of the image holds a conflicting lock.
pub(crate) fn try_lock(file: &File, kind: LockKind) -> io::Result<bool> {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value that the fields below
    // complete (l_start = l_len = 0 covers the whole file; l_pid must be 0 for OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    } as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl on a descriptor `file` owns, with a pointer to a live, initialised flock.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use vmm_sys_util::tempfile::TempFile;

    fn open(path: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn one_writer_or_many_readers() {
        let t = TempFile::new().unwrap();
        let (a, b, c) = (open(t.as_path()), open(t.as_path()), open(t.as_path()));
        assert!(try_lock(&a, LockKind::Exclusive).unwrap());
        assert!(!try_lock(&b, LockKind::Exclusive).unwrap(), "second writer");
        assert!(
            !try_lock(&b, LockKind::Shared).unwrap(),
            "reader beside a writer"
        );
        drop(a);
        assert!(try_lock(&b, LockKind::Shared).unwrap());
        assert!(try_lock(&c, LockKind::Shared).unwrap(), "readers share");
        let d = open(t.as_path());
        assert!(
            !try_lock(&d, LockKind::Exclusive).unwrap(),
            "writer beside readers"
        );
    }
}
