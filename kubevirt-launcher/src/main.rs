//! `kubevirt-launcher`: the per-VM process.
//!
//! - `run FILE`: runs a VMI document to its end (standalone, or spawned by a node agent).
//! - `serve --namespace NS --name NAME --uid UID --run-dir DIR ...`: the `compute` container of
//!   a virt-launcher pod: waits on its control socket for the node agent's `start`, then runs
//!   that VMI as `run` does.
//! - `pod-network --netns PATH --tap-owner UID --vmi FILE|-`: the node agent's privileged half
//!   of the pod network (masquerade: bridge, tap, NAT; bridge: eth0 and the tap on a bridge)
//!   in the pod's network namespace.
//! - `console-log --file PATH`: prints a console log as it grows (the `guest-console-log`
//!   container) until the launcher in its pod ends.
//!
//! Exit codes of `run` and `serve` (`kubevirt_launcher_protocol::ExitStatus`): 0 the guest
//! powered off (Succeeded) or was stopped on request (a `serve` launcher stopped or terminated
//! before its VMI started included); 1 the guest or the VMM failed (Failed); 2 the document is
//! invalid or uses what is not supported yet; 3 the launch failed (image, disk, VMM setup, the
//! control socket); 4 (`run` only) the guest was live-migrated to another launcher and runs
//! there — `serve` exits 0 then, so the source virt-launcher pod ends Completed (phase
//! Succeeded) as upstream's does, while its final status says `Migrated`. Before it exits, the launcher leaves the same with its reason in
//! `<run-dir>/final.json` (`FinalStatus`). `pod-network`: 0 prepared (or already, or no pod
//! network to prepare), 2 the VMI (or the command line) is invalid, 3 the namespace or a
//! set-up step failed. `console-log`: 0 on SIGTERM or SIGINT or once the launcher in its pod
//! ended (its lifetime lock released), 1 when the log cannot be read or printed.
//!
//! Every command logs to stderr through `tracing` (`RUST_LOG` filters it; default: this
//! project's crates at `info`): `--log-format text` (the default) for people, `--log-format
//! json` for upstream virt-launcher's JSON lines (`kubevirt_launcher::logging`).

mod cli;

use clap::{Parser, Subcommand};
use kubevirt_launcher::confine::ThreadKind;
use kubevirt_launcher::logging::{self, LogFormat};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "kubevirt-launcher",
    version,
    about = "Runs one VirtualMachineInstance on kubevirt-vmm"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the launcher's own messages on stderr are written: `text` lines, or `json`
    /// objects with upstream virt-launcher's keys (level, timestamp, msg, component,
    /// namespace, name, uid). `RUST_LOG` filters them.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a VMI (or a VM's template) from a YAML/JSON file (`-` for stdin), as a user wrote it.
    Run(cli::run::RunArgs),
    /// Wait in a virt-launcher pod for the node agent's `start` on the control socket, then run
    /// that VMI (it must have the uid given here).
    Serve(cli::serve::ServeArgs),
    /// Build a VMI's pod network binding (masquerade or bridge, a persistent tap) inside a
    /// pod's network namespace: the node agent's privileged step before `start`.
    PodNetwork(cli::pod_network::PodNetworkArgs),
    /// Print a console log as it grows, following its rotation, until SIGTERM or SIGINT.
    ConsoleLog(cli::console_log::ConsoleLogArgs),
    /// Installs one thread kind's seccomp filter, logs, then makes one system call (by
    /// number): the filters' own test. Hidden: not for users.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread is confined: the subscriber reads RUST_LOG once, here.
    logging::init(cli.log_format);
    match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Serve(args) => cli::serve::serve(args),
        Command::PodNetwork(args) => cli::pod_network::pod_network(args),
        Command::ConsoleLog(args) => cli::console_log::console_log(args),
        Command::SeccompProbe { kind, syscall } => cli::probe::seccomp_probe(kind, syscall),
    }
}
