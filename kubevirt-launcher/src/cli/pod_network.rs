//! `kubevirt-launcher pod-network`: the node agent's privileged step for a launcher in its pod
//! (see `kubevirt_launcher::network::prepare`). Exit codes: 0 prepared (or already prepared,
//! or the VMI has no pod network: nothing changed), 2 the VMI (or the command line) is invalid,
//! 3 the namespace cannot be entered or a set-up step failed. Nothing is changed before the VMI
//! and the namespace are checked.

use super::{log_as, read_object};
use kubevirt_launcher::network::prepare::{PrepareError, PrepareOptions, prepare};
use std::path::PathBuf;
use std::process::ExitCode;

/// `pod-network`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PodNetworkArgs {
    /// The pod's network namespace file (`/proc/<launcher pid>/ns/net`, or `/run/netns/NAME`).
    #[arg(long)]
    netns: PathBuf,
    /// The uid that owns the persistent tap (the launcher's: 0 in the rendered pod).
    #[arg(long)]
    tap_owner: u32,
    /// The pod's network interface.
    #[arg(long, default_value = "eth0")]
    pod_interface: String,
    /// The VMI (YAML or JSON; `-` for stdin).
    #[arg(long, value_name = "FILE")]
    vmi: PathBuf,
}

/// Prepares the namespace; logs what it changed.
pub fn pod_network(args: PodNetworkArgs) -> ExitCode {
    let object = match read_object(&args.vmi) {
        Ok(o) => o,
        Err(why) => {
            tracing::error!(error = %why, "the VMI document is not usable");
            return ExitCode::from(2);
        }
    };
    log_as(&object);
    let opts = PrepareOptions {
        netns: args.netns,
        tap_owner: args.tap_owner,
        pod_iface: args.pod_interface,
    };
    match prepare(&object, &opts) {
        Ok(done) if done.changes.is_empty() => {
            tracing::info!(
                netns = %opts.netns.display(),
                "pod network already prepared: nothing changed"
            );
            ExitCode::SUCCESS
        }
        Ok(done) => {
            tracing::info!(
                netns = %opts.netns.display(),
                changes = %done.changes.join(", "),
                "pod network prepared"
            );
            ExitCode::SUCCESS
        }
        Err(PrepareError::NoPodNetwork(vmi)) => {
            // Not an error: the node agent may run this for every VMI.
            tracing::info!(
                vmi = %vmi,
                "no pod network: nothing to prepare, nothing changed"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "preparing the pod network failed");
            ExitCode::from(if e.is_invalid() { 2 } else { 3 })
        }
    }
}
