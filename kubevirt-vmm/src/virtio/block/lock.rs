//! Image locking: two guests must never write one disk.
//!
//! Like QEMU's image locking, every image a VM opens carries an open-file-description (OFD)
//! lock over the whole file: a read-write open takes it exclusively, a read-only open shared.
//! So a second VM (in this process or any other) that opens an image another VM writes is
//! refused, and so is a writer while readers hold it. OFD locks belong to the open file, not
//! to the process: they are released when the image is closed, also when the process dies
//! (kill -9 included), and they conflict between two opens in one process.
//!
//! Live migration hands a writer's lock from one process to another as QEMU's
//! inactivate/activate does: the target opens its shared images *inactive* (no lock: the
//! source still writes them), the source *inactivates* its images once the guest is paused and
//! its I/O drained and flushed (the exclusive lock is dropped) just before it sends the final
//! state, and the target *activates* them (takes the exclusive lock) before it acks. If the
//! migration fails before the handover the source activates its images again. At no moment
//! may both write: the source writes nothing once it has inactivated, the target nothing
//! before it has activated. Read-only images keep their shared lock throughout (the source's
//! and the target's shared locks coexist).

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
    let file = open_unlocked(path, read_only, flags)?;
    activate(&file, path, read_only)?;
    Ok(file)
}

/// Opens the image at `path` as [`open_locked`] does, but a read-write open takes no lock yet:
/// it is *inactive* (a live-migration target while the source still writes the image) until
/// [`activate`]. A read-only open takes its shared lock at once.
///
/// # Errors
/// As [`open_locked`].
pub(crate) fn open_inactive(
    path: &Path,
    read_only: bool,
    flags: libc::c_int,
) -> Result<File, BackendError> {
    if read_only {
        return open_locked(path, true, flags);
    }
    open_unlocked(path, false, flags)
}

/// Opens the image at `path` read-only or read-write with the extra `open(2)` `flags`, taking
/// no lock.
fn open_unlocked(path: &Path, read_only: bool, flags: libc::c_int) -> Result<File, BackendError> {
    let (mode, mode_verb) = if read_only {
        ("read-only", "read")
    } else {
        ("read-write", "read and write")
    };
    OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| BackendError::Open {
            path: path.to_owned(),
            mode,
            mode_verb,
            source,
        })
}

/// Takes the lock an open of `path` (`read_only` or not) holds while active: exclusive for a
/// writer, shared for a reader. Taking a lock this open holds already is a no-op.
///
/// # Errors
/// [`BackendError::InUse`] when another open holds a conflicting lock (another VM writes or
/// reads the image), [`BackendError::Lock`] when locking fails otherwise.
pub(crate) fn activate(file: &File, path: &Path, read_only: bool) -> Result<(), BackendError> {
    let kind = if read_only {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    match try_lock(file, kind) {
        Ok(true) => Ok(()),
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

/// Gives up a writer's exclusive lock (the caller has flushed and writes no more until it
/// [`activate`]s again); a reader keeps its shared lock. Idempotent.
///
/// # Errors
/// [`BackendError::Lock`] when the lock cannot be changed.
pub(crate) fn inactivate(file: &File, path: &Path, read_only: bool) -> Result<(), BackendError> {
    if read_only {
        return Ok(());
    }
    unlock(file).map_err(|source| BackendError::Lock {
        path: path.to_owned(),
        source,
    })
}

/// Releases whatever lock this open holds.
fn unlock(file: &File) -> io::Result<()> {
    // SAFETY: as in `try_lock`: an all-zero flock is valid; the fields set below complete it.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_UNLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl on a descriptor `file` owns, with a pointer to a live, initialised flock.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

    /// Whether a fresh open of `path` could write it now (no other open holds any lock).
    fn free_for_a_writer(path: &Path) -> bool {
        try_lock(&open(path), LockKind::Exclusive).unwrap()
    }

    #[test]
    fn a_writer_lock_is_handed_over_inactive_to_active_and_back() {
        let t = TempFile::new().unwrap();
        let path = t.as_path();
        let source = open_locked(path, false, 0).unwrap();
        // The target opens while the source writes: no lock, no conflict.
        let target = open_inactive(path, false, 0).unwrap();
        assert!(!free_for_a_writer(path), "the source still holds it");
        let e = activate(&target, path, false).unwrap_err();
        assert!(matches!(e, BackendError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("in use by another VM"), "{e}");
        // The source inactivates (twice is fine); the target activates; the source cannot
        // take it back while the target holds it.
        inactivate(&source, path, false).unwrap();
        inactivate(&source, path, false).unwrap();
        activate(&target, path, false).unwrap();
        activate(&target, path, false).unwrap();
        assert!(!free_for_a_writer(path), "the target holds it");
        assert!(activate(&source, path, false).is_err());
        // A failed handover: the target lets go, the source takes it back.
        inactivate(&target, path, false).unwrap();
        activate(&source, path, false).unwrap();
        assert!(!free_for_a_writer(path));
        assert!(activate(&target, path, false).is_err());
        drop(source);
        assert!(free_for_a_writer(path), "closing the image releases it");
        drop(target);
    }

    #[test]
    fn readers_keep_their_shared_lock_through_a_handover() {
        let t = TempFile::new().unwrap();
        let path = t.as_path();
        let source = open_locked(path, true, 0).unwrap();
        let target = open_inactive(path, true, 0).unwrap();
        inactivate(&source, path, true).unwrap();
        assert!(!free_for_a_writer(path), "a reader still holds it");
        activate(&target, path, true).unwrap();
        drop(source);
        assert!(!free_for_a_writer(path), "the target reads it");
        // An inactive writer's open locks nothing until it activates.
        drop(target);
        let w = open_inactive(path, false, 0).unwrap();
        assert!(free_for_a_writer(path));
        drop(w);
    }
}
