//! `virtctl`, as upstream's users type it: `start`, `stop`, `restart`, `pause vm|vmi`,
//! `unpause vm|vmi`, `soft-reboot`, `migrate`, `migrate-cancel`, `console`, `vnc`, `version`,
//! `create vm`, `expose`, `port-forward`, `ssh`, `scp`, with kubectl's
//! connection flags (`--kubeconfig`, `--context`, `-n`). The binary (`virtctl`, or
//! `kubectl-virt` for `kubectl virt`) is [`main`].

pub mod connect;
pub mod console;
pub mod create;
pub mod expose;
pub mod lifecycle;
pub mod migrate_cancel;
pub mod portforward;
pub mod scp;
pub mod ssh;
pub mod term;
pub mod upload;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use self::connect::{ConnectOptions, Connection};

/// virtctl controls virtual machine related operations on your kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "virtctl", version = concat!("v", env!("CARGO_PKG_VERSION"), "-kubevirt-rs"))]
pub struct Cli {
    /// Path to the kubeconfig file to use for CLI requests.
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The name of the kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// If present, the namespace scope for this CLI request.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a virtual machine.
    Start {
        /// The VM.
        name: String,
        /// If set to true, start the VM in paused state.
        #[arg(long)]
        paused: bool,
        /// If set to true, only check the request; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop a virtual machine.
    Stop {
        /// The VM.
        name: String,
        /// Force the stop (with --grace-period, or at once).
        #[arg(long)]
        force: bool,
        /// The VMI's termination grace period in seconds (needs --force).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        grace_period: i64,
        /// If set to true, only check the request; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restart a virtual machine.
    Restart {
        /// The VM.
        name: String,
        /// Force the restart (with --grace-period, or at once).
        #[arg(long)]
        force: bool,
        /// The old instance's grace period in seconds (needs --force).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        grace_period: i64,
        /// If set to true, only check the request; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Migrate a running virtual machine to another node (a VirtualMachineInstanceMigration;
    /// `kubectl get vmim` follows it).
    Migrate {
        /// The VM.
        name: String,
        /// Node labels the target node must carry (`KEY=VALUE`, repeatable).
        #[arg(long = "addedNodeSelector", value_name = "KEY=VALUE", value_parser = lifecycle::parse_label)]
        added_node_selector: Vec<(String, String)>,
        /// If set to true, only check the request; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Cancel the migration of a virtual machine that has not ended (deletes its
    /// VirtualMachineInstanceMigration; the guest runs on where it was).
    #[command(name = "migrate-cancel")]
    MigrateCancel {
        /// The VM.
        name: String,
    },
    /// Pause a virtual machine (`vm NAME` or `vmi NAME`).
    Pause {
        /// `vm` or `vmi`.
        kind: Kind,
        /// Its name.
        name: String,
        /// If set to true, only check the request; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Unpause a virtual machine (`vm NAME` or `vmi NAME`).
    Unpause {
        /// `vm` or `vmi`.
        kind: Kind,
        /// Its name.
        name: String,
        /// If set to true, only check the request; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Soft reboot a virtual machine instance.
    #[command(name = "soft-reboot")]
    SoftReboot {
        /// The VMI.
        name: String,
    },
    /// Connect to a serial console of a virtual machine instance (`Ctrl+]` leaves).
    Console {
        /// The VMI.
        name: String,
        /// The number of minutes to wait for the virtual machine instance to be running.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
    /// Open a VNC connection to a virtual machine instance.
    Vnc {
        /// The VMI.
        name: String,
    },
    /// Return guest agent info about the operating system.
    Guestosinfo {
        /// The VMI.
        name: String,
    },
    /// Forward local ports to a virtual machine or virtual machine instance.
    #[command(name = "port-forward")]
    PortForward {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        /// Carry stdin and stdout instead of listening (one port; an ssh ProxyCommand).
        #[arg(long)]
        stdio: bool,
        /// `vm/NAME` or `vmi/NAME`.
        target: String,
        /// `PORT` or `LOCAL:REMOTE` (optionally `tcp/` or `udp/` first), one or more.
        #[arg(required = true)]
        ports: Vec<String>,
    },
    /// Open an SSH connection to a virtual machine (the system's ssh through port-forward).
    Ssh(ssh::SshFlags),
    /// SCP files from/to a virtual machine (the system's scp through port-forward).
    Scp(scp::ScpFlags),
    /// Print the client and server version information.
    Version,
    /// Expose a virtual machine instance, virtual machine, or virtual machine instance replica
    /// set as a new service.
    Expose(expose::ExposeFlags),
    /// Upload a VM image to a DataVolume (`image-upload dv NAME --size 10Gi --image-path FILE`).
    #[command(name = "image-upload")]
    ImageUpload(upload::UploadFlags),
    /// Create a manifest for the specified kind.
    Create {
        /// What to create.
        #[command(subcommand)]
        what: create::Create,
    },
}

/// `vm` or `vmi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A VirtualMachine (its instance of the same name is acted on).
    #[value(name = "vm", alias = "virtualmachine")]
    Vm,
    /// A VirtualMachineInstance.
    #[value(name = "vmi", alias = "virtualmachineinstance")]
    Vmi,
}

/// Errors of virtctl commands.
#[derive(Debug, thiserror::Error)]
pub enum VirtctlError {
    /// The kubeconfig could not be used.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request could not be built or sent.
    #[error("{0}")]
    Request(String),
    /// The server refused: its Status message.
    #[error("{message}")]
    Server {
        /// The HTTP status.
        code: u16,
        /// What the server said.
        message: String,
    },
    /// Bad command-line input.
    #[error("{0}")]
    Usage(String),
    /// A terminal or stream error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The command failed as described (already worded for the user).
    #[error("{0}")]
    Failed(String),
    /// A program virtctl ran (ssh) ended with this status, which is virtctl's.
    #[error("")]
    Exit(u8),
}

impl VirtctlError {
    /// A kube error as the user should read it (a server Status is its message).
    pub fn from_kube(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Self::Server {
                code: s.code,
                message: s.message,
            },
            other => Self::Request(other.to_string()),
        }
    }
}

/// Runs virtctl with `args` (the first is the program name) and says how it ended.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A blocking read of stdin (port-forward --stdio) may still be waiting: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(VirtctlError::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<(), VirtctlError> {
    let opts = ConnectOptions {
        kubeconfig: cli.kubeconfig,
        context: cli.context,
        namespace: cli.namespace,
    };
    // Commands that need no cluster, and checks that need none.
    if let Command::Scp(flags) = &cli.command {
        scp::command_line(flags, "default", "virtctl", &opts)?;
    }
    let forward = match &cli.command {
        Command::PortForward { target, ports, .. } => Some(portforward::parse(target, ports)?),
        _ => None,
    };
    if let Command::Create { what } = &cli.command {
        let namespace = opts.namespace.as_deref();
        print!("{}", create::render(what, namespace)?);
        return Ok(());
    }
    let conn = Connection::open(&opts).await?;
    match cli.command {
        Command::Start {
            name,
            paused,
            dry_run,
        } => lifecycle::start(&conn, &name, paused, dry_run).await,
        Command::Stop {
            name,
            force,
            grace_period,
            dry_run,
        } => lifecycle::stop(&conn, &name, force, grace_period, dry_run).await,
        Command::Restart {
            name,
            force,
            grace_period,
            dry_run,
        } => lifecycle::restart(&conn, &name, force, grace_period, dry_run).await,
        Command::Migrate {
            name,
            added_node_selector,
            dry_run,
        } => lifecycle::migrate(&conn, &name, added_node_selector, dry_run).await,
        Command::MigrateCancel { name } => migrate_cancel::run(&conn, &name).await,
        Command::Pause {
            kind,
            name,
            dry_run,
        } => lifecycle::pause(&conn, kind, &name, true, dry_run).await,
        Command::Unpause {
            kind,
            name,
            dry_run,
        } => lifecycle::pause(&conn, kind, &name, false, dry_run).await,
        Command::SoftReboot { name } => lifecycle::soft_reboot(&conn, &name).await,
        Command::Console { name, timeout } => console::run(&conn, &name, timeout).await,
        Command::Vnc { name } => {
            let path = conn.path("virtualmachineinstances", &name, "vnc");
            match conn.websocket(&path).await {
                Ok(_) => Err(VirtctlError::Failed(
                    "the server offered a VNC stream, but this virtctl has no viewer".into(),
                )),
                Err(e) => Err(e),
            }
        }
        Command::Version => {
            println!(
                "Client Version: {}",
                version_info(&crate::api::discovery::version())
            );
            let path = format!("/apis/{}/v1/version", crate::api::discovery::GROUP);
            let server = conn.get_json(&path).await?;
            println!("Server Version: {}", version_info(&server));
            Ok(())
        }
        Command::Expose(flags) => expose::run(&conn, &flags).await,
        Command::ImageUpload(flags) => upload::run(&conn, &flags).await,
        Command::Guestosinfo { name } => {
            let path = conn.path("virtualmachineinstances", &name, "guestosinfo");
            let info = conn.get_json(&path).await?;
            let text = serde_json::to_string_pretty(&info)
                .map_err(|e| VirtctlError::Failed(e.to_string()))?;
            println!("{text}");
            Ok(())
        }
        Command::PortForward { address, stdio, .. } => match &forward {
            Some(t) => portforward::run(&conn, t, &address, stdio).await,
            None => Ok(()),
        },
        Command::Ssh(flags) => {
            let status = ssh::run(&flags, &conn.namespace, &opts)?;
            match status.code() {
                Some(0) => Ok(()),
                code => Err(VirtctlError::Exit(code.unwrap_or(255) as u8)),
            }
        }
        Command::Scp(flags) => {
            let status = scp::run(&flags, &conn.namespace, &opts)?;
            match status.code() {
                Some(0) => Ok(()),
                code => Err(VirtctlError::Exit(code.unwrap_or(255) as u8)),
            }
        }
        Command::Create { .. } => Ok(()),
    }
}

/// `version.Info{GitVersion:"...", ...}` as upstream's virtctl prints it.
fn version_info(v: &serde_json::Value) -> String {
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or_default();
    format!(
        "version.Info{{GitVersion:{:?}, GitCommit:{:?}, GitTreeState:{:?}, BuildDate:{:?}, GoVersion:{:?}, Compiler:{:?}, Platform:{:?}}}",
        field("gitVersion"),
        field("gitCommit"),
        field("gitTreeState"),
        field("buildDate"),
        field("goVersion"),
        field("compiler"),
        field("platform")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("virtctl").chain(args.iter().copied()))
    }

    #[tokio::test]
    async fn bad_scp_and_forward_targets_are_usage_errors() {
        let e = run(parse(&["scp", "a", "b"]).unwrap()).await.unwrap_err();
        assert!(e.to_string().contains("exactly one of SRC and DST"), "{e}");
        // Checked before any cluster is contacted.
        let e = run(parse(&["port-forward", "testvm", "8080:80"]).unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("vm/NAME"), "{e}");
    }

    #[test]
    fn flags_are_upstreams_and_unknown_ones_are_usage_errors() {
        let cli = parse(&["-n", "ns1", "stop", "vm1", "--force", "--grace-period", "0"]).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("ns1"));
        assert!(matches!(
            cli.command,
            Command::Stop {
                force: true,
                grace_period: 0,
                ..
            }
        ));
        let cli = parse(&["pause", "vmi", "x", "--dry-run"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Pause {
                kind: Kind::Vmi,
                dry_run: true,
                ..
            }
        ));
        let e = parse(&["stop", "--bogus", "vm1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(parse(&["pause", "pod", "x"]).is_err());
    }
}
