//! `kubevirt-launcher run`: a VMI document from a file or stdin, run to its end.

use super::supervise::{finish, launch_and_supervise};
use super::{SeccompMode, log_as, read_object};
use kubevirt_launcher::confine;
use kubevirt_launcher::run::RunOptions;
use kubevirt_launcher_protocol::{ExitStatus, FINAL_STATUS};
use std::path::PathBuf;
use std::process::ExitCode;

/// `run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
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
    /// Build the pod network's binding (masquerade: bridge, nftables NAT; bridge: eth0 and the
    /// tap on a bridge, the pod's address to the guest; DHCP for both) in this process's
    /// network namespace: only where that namespace is the pod's or a scratch one.
    #[arg(long)]
    pod_network: bool,
    /// The pod's network interface.
    #[arg(long, default_value = "eth0")]
    pod_interface: String,
    /// Seccomp filters per thread and no capabilities once the VM runs (`default`), or none
    /// (`none`, for debugging a filter that refuses a call it should allow).
    #[arg(long, value_enum, default_value_t = SeccompMode::Default)]
    seccomp: SeccompMode,
    /// Resume the guest from this memory-state snapshot instead of booting it: a directory
    /// the `snapshot` control op of a launcher of the same VMI wrote (under its run
    /// directory's `snapshots/`). The disks must be as they were at the snapshot.
    #[arg(long, value_name = "DIR")]
    restore_from: Option<PathBuf>,
    /// Be a live-migration target: listen at ADDR (`unix:PATH` or `tcp:IP:PORT`) for the
    /// source launcher (`{"op": "migrate", "target": ADDR}`) and run the guest it sends,
    /// instead of booting it. The VMI document must be the source's.
    #[arg(long, value_name = "ADDR", conflicts_with = "restore_from")]
    incoming: Option<String>,
}

/// Runs the document; the exit code is the [`ExitStatus`].
pub fn run(args: RunArgs) -> ExitCode {
    if args.seccomp == SeccompMode::Default
        && let Err(e) = confine::enable()
    {
        tracing::error!(
            error = %e,
            "cannot confine the launcher (--seccomp=none runs without confinement)"
        );
        return ExitCode::from(ExitStatus::LaunchFailed.code());
    }
    // A run directory made up here is this process's: nobody reads a final status from it,
    // so it goes when the run ends (the node agent always names its own).
    let own_dir = args.run_dir.is_none();
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("kubevirt-launcher-{}", std::process::id()))
    });
    // A verdict left by an earlier run in this directory is not this run's.
    let _ = std::fs::remove_file(run_dir.join(FINAL_STATUS));
    let verdict = run_in(args, run_dir.clone());
    if own_dir {
        if let Err(e) = std::fs::remove_dir_all(&run_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(
                run_dir = %run_dir.display(),
                error = %e,
                "could not remove the run directory"
            );
        }
        return ExitCode::from(verdict.0.code());
    }
    finish(&run_dir, verdict)
}

/// Reads the document and runs it to its end: how it ended, and why.
fn run_in(args: RunArgs, run_dir: PathBuf) -> (ExitStatus, Option<String>) {
    let Some(vmi) = args.vmi.or(args.file) else {
        return (ExitStatus::Invalid, Some("no VMI document given".into()));
    };
    let object = match read_object(&vmi) {
        Ok(o) => o,
        Err(why) => {
            tracing::error!(error = %why, "the VMI document is not usable");
            return (ExitStatus::Invalid, Some(why));
        }
    };
    log_as(&object);
    let opts = RunOptions {
        run_dir,
        cache_dir: args.cache_dir,
        volumes_dir: args.volumes_dir,
        plain_http: args.plain_http,
        registry_config_dir: args.registry_config_dir,
        echo_console: !args.quiet,
        pod_network: args.pod_network,
        pod_iface: args.pod_interface,
        network_prepared: false,
        always_log_console: false,
        control: None,
        restore_from: args.restore_from,
        incoming: args.incoming,
    };
    // Standalone and not quiet: the keyboard goes to the guest's console.
    let keyboard = !args.quiet && vmi.as_os_str() != "-";
    launch_and_supervise(&object, &opts, keyboard)
}
