//! `kubevirt-launcher`: the per-VM process.
//!
//! Exit codes (`kubevirt_launcher_protocol::ExitStatus`): 0 the guest powered off (Succeeded) or
//! was stopped on request; 1 the guest or the VMM failed (Failed); 2 the document is invalid or
//! uses what is not supported yet; 3 the launch failed (image, disk, VMM setup). Before it exits,
//! `run` leaves the same with its reason in `<run-dir>/final.json` (`FinalStatus`).

use clap::{Parser, Subcommand};
use kubevirt_api::codec::documents_from_yaml;
use kubevirt_api::object::Object;
use kubevirt_launcher::confine::{self, ThreadKind};
use kubevirt_launcher::control::{Shutdown, phase};
use kubevirt_launcher::run::{RunOptions, launch};
use kubevirt_launcher::terminal::{CharacterMode, forward};
use kubevirt_launcher_protocol::{
    ExitStatus, FINAL_STATUS as FINAL_STATUS_FILE, FinalStatus, Phase,
};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "kubevirt-launcher",
    version,
    about = "Runs one VirtualMachineInstance on kubevirt-vmm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a VMI (or a VM's template) from a YAML/JSON file (`-` for stdin), as a user wrote it.
    Run(RunArgs),
    /// Installs one thread kind's seccomp filter, then makes one system call (by number): the
    /// filters' own test. Hidden: not for users.
    #[command(hide = true)]
    SeccompProbe {
        /// The filter.
        #[arg(long, value_enum)]
        kind: ThreadKind,
        /// The system call number, called with zero arguments.
        #[arg(long)]
        syscall: i64,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The document (or give it with --vmi).
    #[arg(value_name = "FILE", required_unless_present = "vmi")]
    file: Option<PathBuf>,
    /// The document.
    #[arg(long = "vmi", value_name = "FILE", conflicts_with = "file")]
    vmi: Option<PathBuf>,
    /// Per-VMI directory for sockets and ephemeral disks (default: a new directory under /tmp).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Image cache.
    #[arg(long, default_value = "/var/cache/kubevirt-rs/images")]
    cache_dir: PathBuf,
    /// Where claims are prepared (`<dir>/<volume>/disk.img`).
    #[arg(long, default_value = "/var/run/kubevirt-rs/volumes")]
    volumes_dir: PathBuf,
    /// A registry (`host:port`) to use over plain HTTP; repeatable.
    #[arg(long = "plain-http-registry")]
    plain_http: Vec<String>,
    /// containerd's registry host configuration (its `config_path`, e.g.
    /// /etc/containerd/certs.d): `<dir>/<registry>/hosts.toml` names mirrors tried first.
    #[arg(long, value_name = "DIR")]
    registry_config_dir: Option<PathBuf>,
    /// Do not copy the console to stdout.
    #[arg(long)]
    quiet: bool,
    /// Build the pod network's masquerade binding (bridge, nftables NAT, DHCP) in this
    /// process's network namespace: only where that namespace is the pod's or a scratch one.
    #[arg(long)]
    pod_network: bool,
    /// The pod's network interface.
    #[arg(long, default_value = "eth0")]
    pod_interface: String,
    /// Seccomp filters per thread and no capabilities once the VM runs (`default`), or none
    /// (`none`, for debugging a filter that refuses a call it should allow).
    #[arg(long, value_enum, default_value_t = SeccompMode::Default)]
    seccomp: SeccompMode,
}

/// Whether the launcher confines itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SeccompMode {
    /// No filters, capabilities kept.
    None,
    /// Per-thread filters, capabilities dropped after the launch.
    Default,
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::SeccompProbe { kind, syscall } => seccomp_probe(kind, syscall),
    }
}

/// Confines this thread as `kind` and makes the call: a forbidden one ends the process
/// through the SIGSYS reporter; an allowed one prints its result.
fn seccomp_probe(kind: ThreadKind, syscall: i64) -> ExitCode {
    if let Err(e) = confine::enable().and_then(|()| confine::confine_thread(kind)) {
        eprintln!("error: {e}");
        return ExitCode::from(3);
    }
    // SAFETY: a raw system call with zero arguments: the probe's whole purpose. Calls that
    // would take pointers get NULL and fail with EFAULT rather than touch memory.
    let rc = unsafe { libc::syscall(syscall, 0, 0, 0, 0, 0, 0) };
    println!(
        "{} ({syscall}) allowed: returned {rc}",
        confine::syscall_name(syscall)
    );
    ExitCode::SUCCESS
}

fn run(args: RunArgs) -> ExitCode {
    if args.seccomp == SeccompMode::Default
        && let Err(e) = confine::enable()
    {
        eprintln!("error: {e} (--seccomp=none runs without confinement)");
        return ExitCode::from(ExitStatus::LaunchFailed.code());
    }
    // A run directory made up here is this process's: nobody reads a final status from it,
    // so it goes when the run ends (the node agent always names its own).
    let own_dir = args.run_dir.is_none();
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("kubevirt-launcher-{}", std::process::id()))
    });
    // A verdict left by an earlier run in this directory is not this run's.
    let _ = std::fs::remove_file(run_dir.join(FINAL_STATUS_FILE));
    let (exit, reason) = run_in(args, run_dir.clone());
    if own_dir {
        let _ = reason;
        if let Err(e) = std::fs::remove_dir_all(&run_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!(
                "kubevirt-launcher: could not remove {}: {e}",
                run_dir.display()
            );
        }
        return ExitCode::from(exit.code());
    }
    // The node agent reads why from here, not from the log.
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        eprintln!(
            "kubevirt-launcher: could not leave the final status in {}: {e}",
            run_dir.display()
        );
    } else if let Err(e) = FinalStatus::new(exit, reason).write(&run_dir) {
        eprintln!("kubevirt-launcher: could not leave the final status: {e}");
    }
    ExitCode::from(exit.code())
}

/// Reads the document and runs it to its end: how it ended, and why.
fn run_in(args: RunArgs, run_dir: PathBuf) -> (ExitStatus, Option<String>) {
    let RunArgs {
        file,
        vmi,
        run_dir: _,
        cache_dir,
        volumes_dir,
        plain_http,
        registry_config_dir,
        quiet,
        pod_network,
        pod_interface,
        seccomp: _,
    } = args;
    let refuse = |why: String| {
        eprintln!("error: {why}");
        (ExitStatus::Invalid, Some(why))
    };
    let Some(vmi) = vmi.or(file) else {
        return refuse("no VMI document given".into());
    };
    let text = if vmi.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(&vmi)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => return refuse(format!("{}: {e}", vmi.display())),
    };
    let object = match documents_from_yaml(&text).map(|d| d.into_iter().next()) {
        Ok(Some(doc)) => match Object::decode(&doc.value) {
            Ok(o) => o,
            Err(e) => return refuse(format!("{}: {e}", vmi.display())),
        },
        Ok(None) => return refuse(format!("{}: no document", vmi.display())),
        Err(e) => return refuse(format!("{}: {e}", vmi.display())),
    };
    let opts = RunOptions {
        run_dir,
        cache_dir,
        volumes_dir,
        plain_http,
        registry_config_dir,
        echo_console: !quiet,
        pod_network,
        pod_iface: pod_interface,
    };
    let launched = match launch(&object, &opts) {
        Ok(l) => l,
        Err(e) => {
            let exit = if e.is_invalid() {
                ExitStatus::Invalid
            } else {
                ExitStatus::LaunchFailed
            };
            eprintln!("error: {e}");
            return (exit, Some(e.to_string()));
        }
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    // Standalone and not quiet: the keyboard goes to the guest's console.
    let _terminal = (!quiet && vmi.as_os_str() != "-").then(|| {
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
    eprintln!(
        "kubevirt-launcher: {} running; console {} control {}",
        launched.plan.name,
        launched.console.socket().display(),
        launched.control.socket().display()
    );
    let reason = loop {
        match launched.machine.supervise(Duration::from_millis(100)) {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(e) => {
                let why = format!("restarting the guest failed: {e}");
                eprintln!("kubevirt-launcher: {why}");
                let _ = launched.cleanup();
                return (ExitStatus::Failed, Some(why));
            }
        }
        if TERMINATE.swap(false, Ordering::SeqCst) {
            let grace = launched.plan.grace_period;
            match launched.shutdowns.request(grace) {
                Shutdown::Requested => eprintln!(
                    "kubevirt-launcher: terminating: pressed the power button; stopping the VM in {}s unless it powers off",
                    grace.as_secs()
                ),
                Shutdown::AlreadyRequested => {}
                Shutdown::Stopped(r) => {
                    eprintln!(
                        "kubevirt-launcher: terminating: no ACPI power button, stopped the VM"
                    );
                    break r;
                }
            }
        }
    };
    // Deliver what the guest printed last before reporting.
    if let Some(stats) = launched.machine.vm().console_stats() {
        launched
            .console
            .wait_for(stats.bytes_out(), Duration::from_secs(2));
    }
    let (phase, why) = phase(&launched.machine.vm());
    let _ = launched.cleanup();
    let reason = reason.to_string();
    eprintln!(
        "kubevirt-launcher: {} {phase}: {reason}{}",
        launched.plan.name,
        why.as_ref()
            .filter(|w| **w != reason)
            .map(|w| format!(" ({w})"))
            .unwrap_or_default()
    );
    if phase == Phase::Succeeded {
        (ExitStatus::Succeeded, None)
    } else {
        (ExitStatus::Failed, Some(why.unwrap_or(reason)))
    }
}
