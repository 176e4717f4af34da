//! SIGTERM and SIGINT as a flag the commands poll (the pod's containers get SIGTERM when the
//! pod is deleted; as PID 1 in a container, a signal without a handler would be ignored).

use std::sync::atomic::{AtomicBool, Ordering};

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Catches SIGTERM and SIGINT from now on.
pub fn install() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether a signal arrived since the last call (the flag is cleared).
pub fn take() -> bool {
    TERMINATE.swap(false, Ordering::SeqCst)
}

/// Whether a signal arrived (the flag stays set).
pub fn arrived() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}
