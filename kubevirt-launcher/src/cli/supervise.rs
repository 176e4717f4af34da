//! A VM's life, the same for `run` and `serve`: launch it, confine the main thread, supervise
//! it (guest reboots, SIGTERM as a graceful shutdown with the VMI's grace period), and leave the
//! verdict in `final.json`.

use super::signals;
use kubevirt_api::object::Object;
use kubevirt_launcher::confine::{self, ThreadKind};
use kubevirt_launcher::control::{Shutdown, phase};
use kubevirt_launcher::run::{RunOptions, launch};
use kubevirt_launcher::terminal::{CharacterMode, forward};
use kubevirt_launcher_protocol::{ExitStatus, FinalStatus, Phase};
use kubevirt_vmm::ExitReason;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How a run ended, and why (`None`: nothing to add).
pub type Verdict = (ExitStatus, Option<String>);

/// Leaves the verdict in `<run_dir>/final.json` (the node agent reads why from there, not
/// from the log) and turns it into the exit code.
pub fn finish(run_dir: &Path, verdict: Verdict) -> ExitCode {
    ExitCode::from(finish_with_status(run_dir, verdict).code())
}

/// [`finish`] without choosing the exit code: returns the status to exit with.
pub fn finish_with_status(run_dir: &Path, (exit, reason): Verdict) -> ExitStatus {
    if let Err(e) = std::fs::create_dir_all(run_dir) {
        tracing::error!(
            run_dir = %run_dir.display(),
            error = %e,
            "could not leave the final status"
        );
    } else if let Err(e) = FinalStatus::new(exit, reason).write(run_dir) {
        tracing::error!(
            run_dir = %run_dir.display(),
            error = %e,
            "could not leave the final status"
        );
    }
    // A stop's reply is written before the process ends.
    kubevirt_launcher::control::wait_for_replies(std::time::Duration::from_secs(2));
    exit
}

/// Launches `object` with `opts` and runs it to its end; with `keyboard`, this process's stdin
/// is the guest's console input (standalone `run`).
pub fn launch_and_supervise(object: &Object, opts: &RunOptions, keyboard: bool) -> Verdict {
    let launched = match launch(object, opts) {
        Ok(l) => l,
        Err(e) => {
            let exit = if e.is_invalid() {
                ExitStatus::Invalid
            } else {
                ExitStatus::LaunchFailed
            };
            if e.is_invalid() {
                tracing::error!(error = %e, "the VMI is invalid or uses what is not supported");
            } else {
                tracing::error!(error = %e, "the launch failed");
            }
            return (exit, Some(e.to_string()));
        }
    };
    signals::install();
    let _terminal = keyboard.then(|| {
        let machine = launched.machine.clone();
        let mode = CharacterMode::enter(std::io::stdin().as_fd());
        let _ = forward(
            std::io::stdin(),
            Arc::new(move |b: &[u8]| {
                machine.vm().serial_input(b);
            }),
        );
        mode
    });
    // Everything that needs wider rights is done: the network is built, the sockets bound,
    // the signal handlers and terminal set.
    confine::enter(ThreadKind::Main);
    tracing::info!(
        phase = %Phase::Running,
        console = %launched.console.socket().display(),
        control = %launched.control.socket().display(),
        "the VM runs"
    );
    let reason = loop {
        match launched.machine.supervise(Duration::from_millis(100)) {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(e) => {
                let why = format!("restarting the guest failed: {e}");
                tracing::error!(error = %e, "restarting the guest failed");
                let _ = launched.cleanup();
                return (ExitStatus::Failed, Some(why));
            }
        }
        if signals::take() {
            let grace = launched.plan.grace_period;
            match launched.shutdowns.request(grace) {
                Shutdown::Requested => tracing::info!(
                    grace_period_seconds = grace.as_secs(),
                    "terminating: pressed the power button; the VM is stopped after the grace period unless it powers off"
                ),
                Shutdown::AlreadyRequested => {}
                Shutdown::Stopped(r) => {
                    tracing::info!("terminating: no ACPI power button, stopped the VM");
                    break r;
                }
            }
        }
    };
    // A migrated VM ends a moment before the target is told to run it: let that go out.
    if reason == ExitReason::Migrated {
        launched.migrations.wait_done(Duration::from_secs(10));
    }
    // Deliver what the guest printed last before reporting.
    if let Some(stats) = launched.machine.vm().console_stats() {
        launched
            .console
            .wait_for(stats.bytes_out(), Duration::from_secs(2));
    }
    let (phase, why) = phase(&launched.machine.vm());
    let _ = launched.cleanup();
    let migrated = reason == ExitReason::Migrated;
    let reason = reason.to_string();
    match why.as_ref().filter(|w| **w != reason) {
        Some(detail) => tracing::info!(
            phase = %phase,
            reason = %reason,
            detail = %detail,
            "the VMI ended"
        ),
        None => tracing::info!(phase = %phase, reason = %reason, "the VMI ended"),
    }
    if migrated {
        (ExitStatus::Migrated, Some(reason))
    } else if phase == Phase::Succeeded {
        (ExitStatus::Succeeded, None)
    } else {
        (ExitStatus::Failed, Some(why.unwrap_or(reason)))
    }
}
