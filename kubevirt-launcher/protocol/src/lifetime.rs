//! The launcher's lifetime lock: a launcher in a pod (`serve`) holds [`LAUNCHER_LOCK`] in its
//! run directory locked (`flock`, exclusive) from the moment the directory is its own until the
//! process ends. The kernel drops the lock with the last open file description, so a kill -9
//! ends it too, and nothing has to be cleaned up for the next reader to see it. Whoever shares
//! the run directory tells a live launcher from a gone one without asking it anything: the
//! pod's `guest-console-log` container ends once its launcher is gone, and the node agent never
//! sweeps a run directory whose launcher lives.

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;

/// The lock file's name in the launcher's run directory.
pub const LAUNCHER_LOCK: &str = "launcher.lock";

/// What the lifetime lock in a run directory says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// No lock file: no launcher has taken the directory (yet), or the directory is gone.
    Absent,
    /// A live launcher holds it.
    Alive,
    /// It is there but nobody holds it: its launcher ended.
    Ended,
}

/// Creates and locks `run_dir`'s lifetime lock for as long as the returned file stays open.
/// The file is opened close-on-exec, so processes the launcher spawns never keep it alive.
///
/// # Errors
/// The file cannot be created or locked.
pub fn hold(run_dir: &Path) -> io::Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(run_dir.join(LAUNCHER_LOCK))?;
    // Blocking: a reader's probe holds it shared for an instant only.
    file.lock()?;
    Ok(file)
}

/// What the lifetime lock of `run_dir` says now. It only reads: it never creates the file.
///
/// # Errors
/// The file exists but cannot be opened or probed.
pub fn lifetime(run_dir: &Path) -> io::Result<Lifetime> {
    let file = match File::open(run_dir.join(LAUNCHER_LOCK)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lifetime::Absent),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        // Released when `file` closes.
        Ok(()) => Ok(Lifetime::Ended),
        Err(TryLockError::WouldBlock) => Ok(Lifetime::Alive),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_then_alive_while_held_then_ended() {
        let dir = std::env::temp_dir().join(format!("kvl-lifetime-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(lifetime(&dir).expect("probe"), Lifetime::Absent);
        let held = hold(&dir).expect("hold");
        assert_eq!(lifetime(&dir).expect("probe"), Lifetime::Alive);
        drop(held);
        assert_eq!(lifetime(&dir).expect("probe"), Lifetime::Ended);
        std::fs::remove_dir_all(&dir).expect("clean");
        assert_eq!(lifetime(&dir).expect("probe"), Lifetime::Absent);
    }
}
