//! `kubevirt-launcher console-log`: the pod's `guest-console-log` container, so `kubectl logs
//! POD -c guest-console-log` shows the serial console.

use super::signals;
use kubevirt_launcher::console::follow::{POLL, follow};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// `console-log`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ConsoleLogArgs {
    /// The console log (`<run-dir>/console.log`); waited for if it does not exist yet.
    #[arg(long)]
    file: PathBuf,
}

/// Follows the log until SIGTERM or SIGINT (exit 0).
pub fn console_log(args: ConsoleLogArgs) -> ExitCode {
    signals::install();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !signals::arrived() {
                std::thread::sleep(POLL);
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
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
