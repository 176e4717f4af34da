//! `kubevirt-launcher console-log`: the pod's `guest-console-log` container, so `kubectl logs
//! POD -c guest-console-log` shows the serial console. It ends (exit 0) on SIGTERM or SIGINT,
//! and once the launcher in its pod is gone, so a pod whose `compute` container exited ends
//! too (upstream's goes Completed after a live migration): the launcher's lifetime lock in the
//! shared run directory ([`kubevirt_launcher_protocol::LAUNCHER_LOCK`]) is released (a kill -9
//! included), or the directory lost it after the launcher had held it (the node agent removed
//! the directory). A launcher that has not taken its directory yet (it waits for the node agent
//! to give it) is waited for, up to `--launcher-wait`.

use super::signals;
use kubevirt_launcher::console::follow::{POLL, follow};
use kubevirt_launcher_protocol::{Lifetime, lifetime};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `console-log`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ConsoleLogArgs {
    /// The console log (`<run-dir>/console.log`); waited for if it does not exist yet. Its
    /// directory is the launcher's run directory, whose lifetime lock says when to end.
    #[arg(long)]
    file: PathBuf,
    /// How long to wait, in seconds, for a launcher to take the run directory before ending
    /// (above `serve --run-dir-wait`, how long the launcher itself waits for it).
    #[arg(long, value_name = "SECONDS", default_value_t = 360)]
    launcher_wait: u64,
}

/// Why the follower stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// SIGTERM or SIGINT.
    Signal,
    /// The launcher ended (its lock released, or gone after it was held).
    LauncherEnded,
    /// No launcher took the run directory in time.
    NoLauncher,
}

/// What the launcher's lifetime lock says for the follower: `Some` once it should stop.
/// `seen` remembers that a launcher held it; `waited` is how long the follower has run.
fn launcher_end(now: Lifetime, seen: &mut bool, waited: Duration, limit: Duration) -> Option<End> {
    match now {
        Lifetime::Alive => {
            *seen = true;
            None
        }
        Lifetime::Ended => Some(End::LauncherEnded),
        Lifetime::Absent if *seen => Some(End::LauncherEnded),
        Lifetime::Absent => (waited >= limit).then_some(End::NoLauncher),
    }
}

/// Polls signals and the lifetime lock of `run_dir` until one says to stop.
fn watch(run_dir: &Path, limit: Duration) -> End {
    let start = Instant::now();
    let mut seen = false;
    loop {
        if signals::arrived() {
            return End::Signal;
        }
        // One that cannot be read counts as absent: bounded by `limit` unless a launcher was seen.
        let now = lifetime(run_dir).unwrap_or(Lifetime::Absent);
        if let Some(end) = launcher_end(now, &mut seen, start.elapsed(), limit) {
            return end;
        }
        std::thread::sleep(POLL);
    }
}

/// Follows the log until SIGTERM, SIGINT or the launcher's end (exit 0).
pub fn console_log(args: ConsoleLogArgs) -> ExitCode {
    signals::install();
    let stop = Arc::new(AtomicBool::new(false));
    let run_dir = match args.file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let limit = Duration::from_secs(args.launcher_wait);
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let end = watch(&run_dir, limit);
            match end {
                End::Signal => {}
                End::LauncherEnded => tracing::info!("the launcher ended: done"),
                End::NoLauncher => tracing::warn!(
                    run_dir = %run_dir.display(),
                    seconds = limit.as_secs(),
                    "no launcher took the run directory in time: done"
                ),
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let result = follow(&args.file, &mut std::io::stdout().lock(), &stop, POLL);
    drop(watcher);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(file = %args.file.display(), error = %e, "cannot follow the console log");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_once_the_launcher_is_gone_and_waits_a_bounded_time_for_one() {
        let limit = Duration::from_secs(360);
        let short = Duration::from_secs(5);
        let mut seen = false;
        // Not taken yet: waited for, up to the limit.
        assert_eq!(
            launcher_end(Lifetime::Absent, &mut seen, short, limit),
            None
        );
        assert_eq!(
            launcher_end(Lifetime::Absent, &mut seen, limit, limit),
            Some(End::NoLauncher)
        );
        // Held: followed; then released (exit or kill -9) or removed with its directory.
        assert_eq!(launcher_end(Lifetime::Alive, &mut seen, short, limit), None);
        assert!(seen);
        assert_eq!(
            launcher_end(Lifetime::Absent, &mut seen, short, limit),
            Some(End::LauncherEnded)
        );
        let mut fresh = false;
        assert_eq!(
            launcher_end(Lifetime::Ended, &mut fresh, short, limit),
            Some(End::LauncherEnded)
        );
    }
}
