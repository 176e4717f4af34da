//! `kubevirt-launcher`: the per-VM process.
//!
//! Exit codes: 0 the guest powered off (Succeeded) or was stopped on request; 1 the guest or the
//! VMM failed (Failed); 2 the document is invalid or uses what is not supported yet; 3 the launch
//! failed (image, disk, VMM setup).

use clap::{Parser, Subcommand};
use kubevirt_api::codec::documents_from_yaml;
use kubevirt_api::object::Object;
use kubevirt_launcher::control::phase;
use kubevirt_launcher::run::network::PodNetworkError;
use kubevirt_launcher::run::{RunError, RunOptions, launch};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
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
    Run {
        /// The document.
        #[arg(long = "vmi", value_name = "FILE")]
        vmi: PathBuf,
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
    },
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let Command::Run {
        vmi,
        run_dir,
        cache_dir,
        volumes_dir,
        plain_http,
        quiet,
        pod_network,
        pod_interface,
    } = Cli::parse().command;
    let text = if vmi.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(&vmi)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", vmi.display());
            return ExitCode::from(2);
        }
    };
    let object = match documents_from_yaml(&text).map(|d| d.into_iter().next()) {
        Ok(Some(doc)) => match Object::decode(&doc.value) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {}: {e}", vmi.display());
                return ExitCode::from(2);
            }
        },
        Ok(None) => {
            eprintln!("error: {}: no document", vmi.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {}: {e}", vmi.display());
            return ExitCode::from(2);
        }
    };
    let run_dir = run_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("kubevirt-launcher-{}", std::process::id()))
    });
    let opts = RunOptions {
        run_dir,
        cache_dir,
        volumes_dir,
        plain_http,
        echo_console: !quiet,
        pod_network,
        pod_iface: pod_interface,
    };
    let launched = match launch(&object, &opts) {
        Ok(l) => l,
        Err(
            e @ (RunError::Plan(_)
            | RunError::Unsupported { .. }
            | RunError::Network(PodNetworkError::NotAllowed { .. })),
        ) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    eprintln!(
        "kubevirt-launcher: {} running; console {} control {}",
        launched.plan.name,
        launched.console.socket().display(),
        launched.control.socket().display()
    );
    let reason = loop {
        if let Some(r) = launched.vm.wait_timeout(Duration::from_millis(100)) {
            break r;
        }
        if TERMINATE.load(Ordering::SeqCst) {
            // A graceful shutdown needs the ACPI power button, which kubevirt-vmm does not raise yet.
            eprintln!("kubevirt-launcher: terminating: stopping the VM");
            break launched.vm.stop();
        }
    };
    // Deliver what the guest printed last before reporting.
    if let Some(stats) = launched.vm.console_stats() {
        launched
            .console
            .wait_for(stats.bytes_out(), Duration::from_secs(2));
    }
    let (phase, why) = phase(&launched.vm);
    let _ = launched.cleanup();
    eprintln!(
        "kubevirt-launcher: {} {phase}: {reason}{}",
        launched.plan.name,
        why.map(|w| format!(" ({w})")).unwrap_or_default()
    );
    if phase == "Succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
