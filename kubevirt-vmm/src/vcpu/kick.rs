//! Kicking a vCPU thread out of `KVM_RUN`.
//!
//! A kick is a real-time signal sent to the vCPU thread. Its handler sets `immediate_exit` in
//! the thread's `kvm_run`, so a kick that lands just before the thread enters `KVM_RUN` (after
//! it last looked at the lifecycle state) still makes `KVM_RUN` return `EINTR` at once instead
//! of running the guest. The run loop clears `immediate_exit` *before* it looks at the state,
//! so no kick is lost.

use std::cell::Cell;
use std::ptr::null_mut;
use std::sync::OnceLock;

use kvm_bindings::kvm_run;
use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::errno;
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

thread_local! {
    /// This thread's `kvm_run`, while it runs a vCPU.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(null_mut()) };
}

/// The signal used for kicks: `SIGRTMIN`, as Firecracker uses.
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_num: c_int, _info: *mut siginfo_t, _ctx: *mut c_void) {
    // `with` on a const-initialised thread-local without destructor neither allocates nor
    // locks, so it is async-signal-safe.
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is set only by `KickGuard::arm` on this thread, to the `kvm_run`
        // mapping of the vCPU this thread owns, and cleared before that vCPU is dropped. A
        // volatile byte store cannot tear, and the thread is not itself touching the field:
        // it is either in `KVM_RUN` or between two of its own accesses.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the process-wide kick handler (once; later calls return the first result).
pub fn install_kick_handler() -> Result<(), errno::Error> {
    static INSTALLED: OnceLock<Result<(), errno::Error>> = OnceLock::new();
    *INSTALLED.get_or_init(|| register_signal_handler(kick_signal(), handle_kick))
}

/// Publishes a vCPU's `kvm_run` to this thread's kick handler for as long as it lives.
pub(crate) struct KickGuard(());

impl KickGuard {
    /// Arms kicks for `run`, which must stay mapped until the guard is dropped.
    pub(crate) fn arm(run: *mut kvm_run) -> Self {
        KVM_RUN.with(|c| c.set(run));
        KickGuard(())
    }
}

impl Drop for KickGuard {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(null_mut()));
    }
}

/// Sends a kick to `thread`. The caller guarantees the thread is alive.
pub(crate) fn kick(thread: libc::pthread_t) {
    // SAFETY: the caller holds the lifecycle's thread table lock and `thread` is registered
    // there, so it has not yet deregistered, hence not exited: the handle is valid. The
    // signal's handler is installed before any vCPU thread registers. Failure (ESRCH) cannot
    // happen for a live thread and would only mean the kick is moot.
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}
