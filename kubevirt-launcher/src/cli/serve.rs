//! `kubevirt-launcher serve`: the `compute` container of a virt-launcher pod. It opens its
//! control socket at once and waits there (phase `Waiting`) for the node agent's `start`,
//! which must carry the VMI whose uid is `--uid`; then it runs that VMI exactly as `run` does,
//! on the same socket (it switches from the waiting answers to the VM's, with no moment
//! without a listener). The console goes to `console.sock` and `console.log` (rotated past
//! 4 MiB), never to stdout; its log goes to stderr, the container's log. From the moment its run
//! directory is writable until it exits it holds the directory's lifetime lock
//! ([`kubevirt_launcher_protocol::LAUNCHER_LOCK`]). `stop` or `shutdown`
//! while waiting, or SIGTERM/SIGINT, end it with exit code 0.

use super::SeccompMode;
use super::signals;
use super::supervise::{Verdict, finish, finish_with_status, launch_and_supervise};
use super::writable;
use kubevirt_api::object::Object;
use kubevirt_launcher::confine;
use kubevirt_launcher::control::{ControlServer, Identity, ServeEvent};
use kubevirt_launcher::run::{RunOptions, SNAPSHOTS_DIR};
use kubevirt_launcher_protocol::{CONTROL_SOCKET, ExitStatus, FINAL_STATUS};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// `serve`'s arguments: the pod's `compute` command line.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The VMI's namespace (reported by `status` while waiting).
    #[arg(long)]
    namespace: String,
    /// The VMI's name.
    #[arg(long)]
    name: String,
    /// The VMI's uid: `start` is refused for any other.
    #[arg(long)]
    uid: String,
    /// The VMI's run directory (the pod's `launcher` volume): control.sock, console.sock,
    /// console.log, final.json, ephemeral disks.
    #[arg(long)]
    run_dir: PathBuf,
    /// Image cache (the pod's `image-cache` volume).
    #[arg(long)]
    cache_dir: PathBuf,
    /// Where claims are prepared (`<dir>/<volume>/disk.img`).
    #[arg(long, default_value = "/var/run/kubevirt-rs/volumes")]
    volumes_dir: PathBuf,
    /// containerd's registry host configuration (`<dir>/<registry>/hosts.toml`).
    #[arg(long, value_name = "DIR")]
    registry_config_dir: Option<PathBuf>,
    /// A registry (`host:port`) to use over plain HTTP; repeatable.
    #[arg(long = "plain-http-registry")]
    plain_http: Vec<String>,
    /// The pod's network interface.
    #[arg(long, default_value = "eth0")]
    pod_interface: String,
    /// When `start` says the network is not prepared, build the binding here (needs
    /// CAP_NET_ADMIN); without this such a start fails with a clear error.
    #[arg(long)]
    pod_network: bool,
    /// Seccomp filters per thread and no capabilities once the VM runs (`default`), or none.
    #[arg(long, value_enum, default_value_t = SeccompMode::Default)]
    seccomp: SeccompMode,
    /// Be a live-migration target (the target pod's launcher): once `start` arrives, listen
    /// at ADDR (`unix:PATH` or `tcp:IP:PORT`) for the source launcher and run the guest it
    /// sends instead of booting it.
    #[arg(long, value_name = "ADDR")]
    incoming: Option<String>,
    /// How long to wait, in seconds, for the run directory to become writable: a non-root
    /// launcher's is given to its uid by the node agent once the pod is on the node.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    run_dir_wait: u64,
}

/// The run directory's lifetime lock ([`kubevirt_launcher_protocol::LAUNCHER_LOCK`]), held
/// from the moment the directory is writable until the process exits.
static LIFETIME: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// How often the waiting launcher looks at its signals.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Waits for `start`, runs the VMI; the exit code is the [`ExitStatus`]'s
/// [`ExitStatus::pod_code`] (0 for a guest migrated away: the pod ends Completed).
pub fn serve(args: ServeArgs) -> ExitCode {
    let run_dir = args.run_dir.clone();
    if args.seccomp == SeccompMode::Default
        && let Err(e) = confine::enable()
    {
        let why = format!("{e} (--seccomp=none runs without confinement)");
        tracing::error!(error = %why, "cannot confine the launcher");
        return finish(&run_dir, (ExitStatus::LaunchFailed, Some(why)));
    }
    kubevirt_launcher::logging::set_vmi(kubevirt_launcher::logging::VmiIdentity {
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        uid: args.uid.clone(),
    });
    signals::install();
    let verdict = serve_in(args);
    // A guest migrated away ends the pod Completed, as upstream's: exit 0 (final.json says
    // Migrated).
    ExitCode::from(finish_with_status(&run_dir, verdict).pod_code())
}

fn serve_in(args: ServeArgs) -> Verdict {
    let failed = |why: String| {
        tracing::error!(error = %why, "the launch failed");
        (ExitStatus::LaunchFailed, Some(why))
    };
    if let Err(e) = std::fs::create_dir_all(&args.run_dir) {
        return failed(format!("--run-dir {}: {e}", args.run_dir.display()));
    }
    match writable::wait(&args.run_dir, Duration::from_secs(args.run_dir_wait)) {
        Ok(true) => {}
        Ok(false) => {
            return (
                ExitStatus::Succeeded,
                Some("terminated before the run directory was ready".into()),
            );
        }
        Err(why) => return failed(why),
    }
    // Held until the process exits (kill -9 included): the pod's `guest-console-log` and the
    // node agent tell from it that this launcher lives.
    match kubevirt_launcher_protocol::hold(&args.run_dir) {
        Ok(lock) => {
            let _ = LIFETIME.set(lock);
        }
        Err(e) => {
            return failed(format!(
                "--run-dir {}: its lifetime lock: {e}",
                args.run_dir.display()
            ));
        }
    }
    // A verdict left by an earlier launcher in this directory is not this one's.
    let _ = std::fs::remove_file(args.run_dir.join(FINAL_STATUS));
    let socket = args.run_dir.join(CONTROL_SOCKET);
    let identity = Identity {
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        uid: args.uid.clone(),
    };
    let (control, events) = match ControlServer::waiting(&socket, identity) {
        Ok(c) => c,
        Err(e) => return failed(format!("control socket {}: {e}", socket.display())),
    };
    tracing::info!(socket = %socket.display(), "waiting for start");
    let (vmi, network_prepared, restore_from) = loop {
        if signals::arrived() {
            tracing::info!("terminated before the VMI started");
            return (
                ExitStatus::Succeeded,
                Some("terminated before the VMI was started".into()),
            );
        }
        match events.recv_timeout(WAIT_POLL) {
            Ok(ServeEvent::Start {
                vmi,
                network_prepared,
                restore_from,
            }) => break (vmi, network_prepared, restore_from),
            Ok(ServeEvent::Exit { op }) => {
                tracing::info!(op = %op, "asked to end before the VMI started: exiting");
                return (
                    ExitStatus::Succeeded,
                    Some(format!("{op} before the VMI was started")),
                );
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return failed("the control socket stopped".into());
            }
        }
    };
    tracing::info!(
        network_prepared,
        restore_from = restore_from.as_deref().unwrap_or("nothing, booting"),
        "start taken: setting up the VM"
    );
    // The node agent placed the memory state in the run directory's snapshots (a name the
    // protocol checked: one path component).
    let restore_from = restore_from.map(|n| args.run_dir.join(SNAPSHOTS_DIR).join(n));
    let object = match Object::decode(&vmi) {
        Ok(o) => o,
        Err(e) => {
            let why = format!("start: vmi: {e}");
            tracing::error!(error = %why, "the VMI in start is not usable");
            return (ExitStatus::Invalid, Some(why));
        }
    };
    let opts = RunOptions {
        run_dir: args.run_dir,
        cache_dir: args.cache_dir,
        volumes_dir: args.volumes_dir,
        plain_http: args.plain_http,
        registry_config_dir: args.registry_config_dir,
        echo_console: false,
        pod_network: args.pod_network,
        pod_iface: args.pod_interface,
        network_prepared,
        always_log_console: true,
        control: Some(control),
        restore_from,
        incoming: args.incoming,
    };
    launch_and_supervise(&object, &opts, false)
}
