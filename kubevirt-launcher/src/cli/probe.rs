//! `seccomp-probe` (hidden): the seccomp filters' own test.

use kubevirt_launcher::confine::{self, ThreadKind};
use std::process::ExitCode;

/// Confines this thread as `kind`, logs (the first event of the thread, so the log's
/// set-up runs under the filter too) and makes the call: a forbidden one ends the process
/// through the SIGSYS reporter; an allowed one prints its result.
pub fn seccomp_probe(kind: ThreadKind, syscall: i64) -> ExitCode {
    if let Err(e) = confine::enable().and_then(|()| confine::confine_thread(kind)) {
        tracing::error!(error = %e, "could not confine the probe");
        return ExitCode::from(3);
    }
    tracing::info!(thread_kind = ?kind, syscall, "confined: logging, then the call");
    tracing::warn!(thread_kind = ?kind, "a second event from the confined thread");
    // SAFETY: a raw system call with zero arguments: the probe's whole purpose. Calls that
    // would take pointers get NULL and fail with EFAULT rather than touch memory.
    let rc = unsafe { libc::syscall(syscall, 0, 0, 0, 0, 0, 0) };
    println!(
        "{} ({syscall}) allowed: returned {rc}",
        confine::syscall_name(syscall)
    );
    ExitCode::SUCCESS
}
