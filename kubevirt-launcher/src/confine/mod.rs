//! The launcher's confinement: a seccomp filter per kind of thread, derived from what each
//! really calls (see the lists in this module's files, one per kind), no new privileges, and no
//! capabilities once the VM runs.
//!
//! Each thread installs its filter as it starts, after everything that needs wider rights is
//! open (the main thread: after the launch, with the network built and the sockets bound). A
//! thread a filtered thread starts inherits its parent's filter and adds its own. A forbidden
//! system call traps (SIGSYS): the handler writes which thread made which call on stderr and
//! ends the whole process with exit code [`VIOLATION_EXIT_CODE`] (128 + SIGSYS), as
//! Firecracker reports its violations.
//!
//! Capabilities are per thread too: each thread drops all of them (effective, permitted,
//! inheritable and bounding) before its filter. The launch itself keeps them: building the
//! pod network needs CAP_NET_ADMIN (bridge, tap, nftables), CAP_NET_BIND_SERVICE and
//! CAP_NET_RAW (the DHCP socket on port 67, bound to the bridge) and CAP_SYS_ADMIN (`ip netns
//! exec`), until the node agent prepares the tap (the VMI-pods issue); nothing after it does.

mod common;
mod console;
mod control;
mod dhcp;
mod main_thread;
mod migration;
mod names;
mod rules;
mod snapshot;
mod vcpu;
mod worker;

pub use self::names::name as syscall_name;

use self::rules::Rules;
use kubevirt_vmm::threads::{VmmThread, set_thread_start_hook};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use thiserror::Error;

/// How a process that broke its filter ends: 128 + SIGSYS, as if the signal had killed it.
pub const VIOLATION_EXIT_CODE: i32 = 128 + libc::SIGSYS;

/// The kinds of launcher thread, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ThreadKind {
    /// `vcpu<N>`.
    Vcpu,
    /// Virtio queue workers.
    Worker,
    /// The control socket's threads.
    Control,
    /// The console's threads.
    Console,
    /// The pod network's DHCP server.
    Dhcp,
    /// The main thread once the VM runs.
    Main,
    /// The thread that writes memory-state snapshots.
    Snapshot,
    /// The thread that live-migrates the VM to another launcher.
    Migration,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 8] = [
        ThreadKind::Vcpu,
        ThreadKind::Worker,
        ThreadKind::Control,
        ThreadKind::Console,
        ThreadKind::Dhcp,
        ThreadKind::Main,
        ThreadKind::Snapshot,
        ThreadKind::Migration,
    ];

    fn label(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Worker => "worker",
            ThreadKind::Control => "control",
            ThreadKind::Console => "console",
            ThreadKind::Dhcp => "dhcp",
            ThreadKind::Main => "main",
            ThreadKind::Snapshot => "snapshot",
            ThreadKind::Migration => "migration",
        }
    }

    /// The allow-list.
    fn rules(self) -> BTreeMap<i64, Vec<seccompiler::SeccompRule>> {
        let mut r = Rules::default();
        match self {
            ThreadKind::Vcpu => vcpu::rules(&mut r),
            ThreadKind::Worker => worker::rules(&mut r),
            ThreadKind::Control => control::rules(&mut r),
            ThreadKind::Console => console::rules(&mut r),
            ThreadKind::Dhcp => dhcp::rules(&mut r),
            ThreadKind::Main => main_thread::rules(&mut r),
            ThreadKind::Snapshot => snapshot::rules(&mut r),
            ThreadKind::Migration => migration::rules(&mut r),
        }
        r.map
    }
}

/// Why confinement could not be set up.
#[derive(Debug, Error)]
pub enum ConfineError {
    /// A filter did not compile (a bug in the allow-lists).
    #[error("compiling the {kind:?} seccomp filter: {source}")]
    Compile {
        /// The kind.
        kind: ThreadKind,
        /// Why.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The kernel refused the filter.
    #[error("installing the {kind:?} seccomp filter: {source}")]
    Install {
        /// The kind.
        kind: ThreadKind,
        /// Why.
        #[source]
        source: seccompiler::Error,
    },
    /// A system call setting up confinement failed.
    #[error("{what}: {source}")]
    Os {
        /// The call.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Compiles the filter of `kind`: its allow-list, anything else traps.
///
/// # Errors
/// [`ConfineError::Compile`].
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, ConfineError> {
    let compile = |source| ConfineError::Compile { kind, source };
    SeccompFilter::new(
        kind.rules(),
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .and_then(BpfProgram::try_from)
    .map_err(compile)
}

/// clone3 fails with ENOSYS (glibc then uses clone, whose flags a filter can check); anything
/// else is left to the thread's own filter.
fn clone3_filter() -> Result<BpfProgram, ConfineError> {
    let compile = |source| ConfineError::Compile {
        kind: ThreadKind::Main,
        source,
    };
    SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .and_then(BpfProgram::try_from)
    .map_err(compile)
}

static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The calling thread's kind, for the violation report (read in the signal handler).
    static KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

/// Turns confinement on for this process: sets no_new_privs, the SIGSYS reporter, and the
/// hook through which the VMM's threads confine themselves. Threads started from now on call
/// [`enter`]; before this, [`enter`] does nothing (the library used in tests stays free).
///
/// # Errors
/// [`ConfineError::Os`] when no_new_privs or the SIGSYS handler cannot be set.
pub fn enable() -> Result<(), ConfineError> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(os("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    install_sigsys_reporter()?;
    ENABLED.store(true, Ordering::SeqCst);
    set_thread_start_hook(vmm_thread_started);
    Ok(())
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

fn vmm_thread_started(kind: VmmThread) {
    enter(match kind {
        VmmThread::Vcpu => ThreadKind::Vcpu,
        VmmThread::DeviceWorker => ThreadKind::Worker,
    });
}

/// Confines the calling thread as `kind` (when confinement is enabled): drops its
/// capabilities, then installs its filter. A thread that cannot be confined must not run
/// unconfined: the process ends with the reason.
pub fn enter(kind: ThreadKind) {
    if !enabled() {
        return;
    }
    if let Err(e) = confine_thread(kind) {
        tracing::error!(thread = kind.label(), error = %e, "confining a thread failed: stopping");
        std::process::exit(VIOLATION_EXIT_CODE);
    }
}

/// Drops the calling thread's capabilities and installs the filter of `kind` (whether or not
/// confinement is enabled: the probe uses it directly).
///
/// # Errors
/// [`ConfineError`] naming the step.
pub fn confine_thread(kind: ThreadKind) -> Result<(), ConfineError> {
    let program = filter(kind)?;
    let clone3 = clone3_filter()?;
    drop_capabilities()?;
    KIND.with(|k| k.set(Some(kind)));
    let install = |source| ConfineError::Install { kind, source };
    seccompiler::apply_filter(&clone3).map_err(install)?;
    seccompiler::apply_filter(&program).map_err(install)
}

fn os(what: &'static str) -> ConfineError {
    ConfineError::Os {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// The highest capability number the kernel knows (`/proc/sys/kernel/cap_last_cap` on
/// current kernels is 40 or 41); dropping numbers past it fails with EINVAL, which is fine.
const CAP_LAST_GUESS: libc::c_ulong = 63;

/// Empties the calling thread's bounding set, then its effective, permitted and inheritable
/// sets.
fn drop_capabilities() -> Result<(), ConfineError> {
    for cap in 0..=CAP_LAST_GUESS {
        // SAFETY: PR_CAPBSET_DROP takes an integer; an unknown capability fails with EINVAL,
        // and without CAP_SETPCAP (already dropped) it fails with EPERM: both leave the set as
        // it is, and the capset below still empties the effective set.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data::default(); 2];
    // SAFETY: capset reads a version-3 header and two data words, both live for the call;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if rc != 0 {
        return Err(os("capset"));
    }
    Ok(())
}

fn install_sigsys_reporter() -> Result<(), ConfineError> {
    // SAFETY: a zeroed sigaction is valid; the handler is an extern "C" fn with the
    // SA_SIGINFO signature and only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = report_violation as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(os("sigaction(SIGSYS)"));
        }
    }
    Ok(())
}

/// Where the kernel puts the trapped system call's number in a SIGSYS siginfo (`si_syscall`,
/// after si_signo, si_errno, si_code, padding and si_call_addr on x86-64).
const SI_SYSCALL_OFFSET: usize = 24;

/// The SIGSYS handler (a plain line, not a log event: a signal handler may not allocate or
/// lock): "kubevirt-launcher: seccomp: thread vcpu0 (1234, vcpu filter) made the
/// forbidden system call execve (59); stopping", then the process ends. Async-signal-safe: formats into
/// a stack buffer and calls write and _exit only (both allowed to every thread).
extern "C" fn report_violation(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers; for SIGSYS the
    // call number is the int at SI_SYSCALL_OFFSET.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read()
    };
    // A thread started by a confined one runs under its parent's filter.
    let kind = KIND
        .with(|k| k.get())
        .map_or("inherited", ThreadKind::label);
    // SAFETY: gettid has no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the live buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0) };
    let name_len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let mut buf = Message::default();
    buf.push(b"kubevirt-launcher: seccomp: thread ");
    buf.push(&name[..name_len]);
    buf.push(b" (");
    buf.number(tid);
    buf.push(b", ");
    buf.push(kind.as_bytes());
    buf.push(b" filter)");
    buf.push(b" made the forbidden system call ");
    buf.push(names::name(i64::from(nr)).as_bytes());
    buf.push(b" (");
    buf.number(i64::from(nr));
    buf.push(b"); stopping\n");
    // SAFETY: write from a live buffer, then _exit; both async-signal-safe.
    unsafe {
        libc::write(2, buf.bytes.as_ptr().cast(), buf.len);
        libc::_exit(VIOLATION_EXIT_CODE);
    }
}

/// A fixed buffer a signal handler can format into.
struct Message {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Message {
    fn default() -> Self {
        Message {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl Message {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if let Some(slot) = self.bytes.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn number(&mut self, n: i64) {
        if n < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles() {
        for kind in ThreadKind::ALL {
            assert!(!filter(kind).unwrap().is_empty(), "{kind:?}");
        }
        assert!(!clone3_filter().unwrap().is_empty());
    }

    #[test]
    fn lists_are_what_the_kinds_need_and_no_more() {
        let has = |k: ThreadKind, nr| k.rules().contains_key(&nr);
        for kind in ThreadKind::ALL {
            assert!(!has(kind, libc::SYS_execve), "{kind:?} may not exec");
            assert!(
                kind == ThreadKind::Migration || !has(kind, libc::SYS_socket),
                "{kind:?} may not open sockets"
            );
            assert!(!has(kind, libc::SYS_ptrace), "{kind:?}");
            assert!(!has(kind, libc::SYS_mount), "{kind:?}");
            assert!(!has(kind, libc::SYS_setns), "{kind:?}");
        }
        // Workers and control threads do no ioctl but the paused clock's two (a disk's error
        // policy pauses the VM from its worker; virtctl pauses and resumes it from control).
        for kind in [ThreadKind::Worker, ThreadKind::Control] {
            let ioctls = ThreadKind::rules(kind).remove(&libc::SYS_ioctl);
            assert_eq!(ioctls.map(|r| r.len()), Some(2), "{kind:?}");
        }
        // Read-only opens only (glibc's malloc reads the online CPU count).
        let open_rules = |k: ThreadKind| ThreadKind::rules(k).remove(&libc::SYS_openat);
        assert_eq!(open_rules(ThreadKind::Vcpu).map(|r| r.len()), Some(1));
        assert_eq!(open_rules(ThreadKind::Worker).map(|r| r.len()), Some(1));
        assert!(has(ThreadKind::Vcpu, libc::SYS_ioctl));
        // The migration thread opens stream sockets of three families, nothing else.
        let socket_rules = ThreadKind::rules(ThreadKind::Migration).remove(&libc::SYS_socket);
        assert_eq!(socket_rules.map(|r| r.len()), Some(3));
    }

    #[test]
    fn the_report_formats_numbers_without_allocating() {
        let mut m = Message::default();
        m.number(0);
        m.push(b" ");
        m.number(-59);
        m.push(b" ");
        m.number(i64::MAX);
        assert_eq!(&m.bytes[..m.len], b"0 -59 9223372036854775807");
    }
}
