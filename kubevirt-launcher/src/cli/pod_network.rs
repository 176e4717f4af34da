//! `kubevirt-launcher pod-network`: the node agent's privileged step for a launcher in its pod
//! (see `kubevirt_launcher::network::prepare`). Exit codes: 0 prepared (or already prepared,
//! or the VMI has no pod network: nothing changed), 2 the VMI (or the command line) is invalid,
//! 3 the namespace cannot be entered or a set-up step failed. Nothing is changed before the VMI
//! and the namespace are checked.

use super::read_object;
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

/// Prepares the namespace; prints what it changed on stderr.
pub fn pod_network(args: PodNetworkArgs) -> ExitCode {
    let object = match read_object(&args.vmi) {
        Ok(o) => o,
        Err(why) => {
            eprintln!("error: {why}");
            return ExitCode::from(2);
        }
    };
    let opts = PrepareOptions {
        netns: args.netns,
        tap_owner: args.tap_owner,
        pod_iface: args.pod_interface,
    };
    match prepare(&object, &opts) {
        Ok(done) if done.changes.is_empty() => {
            eprintln!(
                "kubevirt-launcher: pod network in {} already prepared: nothing changed",
                opts.netns.display()
            );
            ExitCode::SUCCESS
        }
        Ok(done) => {
            eprintln!(
                "kubevirt-launcher: pod network in {} prepared: {}",
                opts.netns.display(),
                done.changes.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(PrepareError::NoPodNetwork(vmi)) => {
            // Not an error: the node agent may run this for every VMI.
            eprintln!(
                "kubevirt-launcher: VMI {vmi} has no pod network: nothing to prepare, nothing changed"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_invalid() { 2 } else { 3 })
        }
    }
}
