//! Waiting for a directory this process may write: a non-root launcher's run directory is a
//! host directory the kubelet creates as root, which the node agent then gives to the
//! launcher's uid (as upstream's virt-handler prepares what a non-root launcher cannot).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::signals;

/// How often the directory is looked at.
const POLL: Duration = Duration::from_millis(25);

/// Whether this process may create files in `dir` (write and search permission for its real
/// uid and gid, which a launcher never changes).
pub fn can_write(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access reads a NUL-terminated path that lives for the call.
    unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Waits until `dir` is writable: `Ok(true)` once it is, `Ok(false)` when SIGTERM or SIGINT
/// arrived first.
///
/// # Errors
/// It is still not writable after `limit`, with what to look at.
pub fn wait(dir: &Path, limit: Duration) -> Result<bool, String> {
    let start = Instant::now();
    let mut said = false;
    while !can_write(dir) {
        if signals::arrived() {
            return Ok(false);
        }
        if start.elapsed() >= limit {
            return Err(format!(
                "--run-dir {}: uid {} gid {} may not write it after {} s: the node agent gives a pod's run directory to the launcher's uid once the pod is on its node; is the node agent (virt-handler) running there?",
                dir.display(),
                // SAFETY: getuid and getgid cannot fail.
                unsafe { libc::getuid() },
                // SAFETY: as above.
                unsafe { libc::getgid() },
                limit.as_secs()
            ));
        }
        if !said {
            tracing::info!(run_dir = %dir.display(), "waiting for the node agent to give the run directory to this launcher");
            said = true;
        }
        std::thread::sleep(POLL);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_is_ready_at_once_and_a_missing_one_times_out_by_name() {
        let dir = kubevirt_testsupport::tempdir("writable");
        assert_eq!(wait(dir.path(), Duration::ZERO), Ok(true));
        let missing = dir.path().join("missing");
        let e = wait(&missing, Duration::ZERO).unwrap_err();
        assert!(e.contains("missing") && e.contains("node agent"), "{e}");
    }
}
