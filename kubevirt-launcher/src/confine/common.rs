//! What every launcher thread calls, whatever its job: the Rust and glibc runtime.

use super::rules::Rules;
use libc::*;

/// The runtime every thread needs.
pub fn runtime(r: &mut Rules) {
    // Memory: the allocator grows and trims its arenas; thread stacks are mapped and freed.
    r.allow(&[
        SYS_mmap,
        SYS_munmap,
        SYS_mprotect,
        SYS_madvise,
        SYS_mremap,
        SYS_brk,
    ]);
    // Locks, condition variables, channels and parking.
    r.allow(&[SYS_futex, SYS_sched_yield, SYS_sched_getaffinity]);
    // Signals: std blocks and restores masks around thread start and exit, tears down the
    // alternate signal stack it gave the thread, and returns from handlers (the vCPU kick).
    r.allow(&[
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_sigaltstack,
        SYS_restart_syscall,
    ]);
    // Time: timeouts, sleeps, log timestamps (when the vDSO falls back to the kernel).
    r.allow(&[SYS_clock_gettime, SYS_clock_nanosleep, SYS_nanosleep]);
    // Identity and ending: panics and aborts (tgkill to itself), a thread's exit, the
    // process's exit after the seccomp report.
    r.allow(&[SYS_gettid, SYS_getpid, SYS_tgkill, SYS_exit, SYS_exit_group]);
    // Messages on stderr, and closing what the thread owns (std checks the descriptor with
    // fcntl(F_GETFD) before closing it in debug builds).
    r.allow(&[SYS_write, SYS_close]);
    r.allow_arg_in(SYS_fcntl, 1, &[F_GETFD as u64]);
    // HashMap seeds: std asks the kernel once per thread.
    r.allow(&[SYS_getrandom]);
    // glibc's malloc reads /sys/devices/system/cpu/online when a thread first allocates (to
    // size its arenas): read-only opens, never O_WRONLY, O_RDWR, O_CREAT or O_TRUNC.
    let writes = (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) as u64;
    r.allow_masked(SYS_openat, 2, writes, 0);
    r.allow(&[SYS_read, SYS_fstat, SYS_newfstatat, SYS_statx, SYS_lseek]);
    // Thread names (set by std as a thread starts; read for messages).
    r.allow_arg_in(SYS_prctl, 0, &[PR_SET_NAME as u64, PR_GET_NAME as u64]);
}

/// Starting threads, for the kinds that do: glibc's `pthread_create` uses clone3, whose flags
/// sit in memory a filter cannot read, so clone3 fails with ENOSYS (the pre-filter in
/// `mod.rs`) and glibc falls back to clone, allowed only with CLONE_THREAD: threads, never
/// processes.
pub fn spawn_threads(r: &mut Rules) {
    r.allow(&[SYS_clone3, SYS_set_robust_list, SYS_rseq]);
    r.allow_masked(SYS_clone, 0, CLONE_THREAD as u64, CLONE_THREAD as u64);
    // The new thread confines itself as its kind: it drops capabilities it no longer has and
    // stacks its own filter on the inherited one. Each call only takes rights away.
    r.allow_arg_in(
        SYS_prctl,
        0,
        &[PR_SET_NO_NEW_PRIVS as u64, PR_CAPBSET_DROP as u64],
    );
    r.allow(&[SYS_capset, SYS_seccomp]);
}

/// The VM's clock, read when the thread pauses the VM and written back when it resumes it
/// (kvmclock stands still while paused): those two requests on the VM descriptor, no other
/// KVM ioctl.
pub fn paused_clock(r: &mut Rules) {
    r.allow_arg_in(
        SYS_ioctl,
        1,
        &[kubevirt_vmm::KVM_GET_CLOCK, kubevirt_vmm::KVM_SET_CLOCK],
    );
}

/// The ioctl type byte (bits 8-15 of the request number).
pub fn ioctl_type(r: &mut Rules, ty: u8) {
    r.allow_masked(SYS_ioctl, 1, 0xff00, u64::from(ty) << 8);
}

/// KVM's ioctl type (`KVMIO`).
pub const KVMIO: u8 = 0xAE;
/// The tty and tun/tap ioctl type (`'T'`): termios requests and TUNSET*.
pub const TTY_TUN: u8 = b'T';
