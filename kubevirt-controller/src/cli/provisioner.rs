//! `kubevirt-controller provisioner`: one node's local-volume provisioner and resizer against a
//! cluster until a signal (a DaemonSet's pod on each node, privileged for loop devices).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::controllers::{Controllers, connect};
use crate::storage::{self, ProvisionerConfig};

/// Arguments of `kubevirt-controller provisioner`.
#[derive(Debug, clap::Args)]
pub struct ProvisionerArgs {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: claims whose selected node it is get a volume here (default: the
    /// host name).
    #[arg(long)]
    pub node: Option<String>,
    /// The storage root: volumes are `<root>/pvc-<claim uid>` (and `.img` for Block).
    #[arg(long, default_value = storage::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Also provision claims of Immediate StorageClasses, which name no node (run one such
    /// instance per cluster, e.g. on a single-node cluster).
    #[arg(long)]
    pub immediate: bool,
}

pub(super) fn run(args: ProvisionerArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let node_name = match args.node {
        Some(n) => n,
        None => crate::node::host_name().map_err(CliError::HostName)?,
    };
    // A root that cannot be made is the operator's to fix: say so now, not in a log line.
    let root =
        storage::disk::prepare_root(&args.root).map_err(|e| CliError::Setup(e.to_string()))?;
    let config = ProvisionerConfig {
        node_name,
        root,
        immediate: args.immediate,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, server) = connect(args.kubeconfig.as_deref()).await?;
        writeln!(
            out,
            "kubevirt-controller: local volume provisioner {} of node {} on {server} (root {}{})",
            storage::PROVISIONER,
            config.node_name,
            config.root.display(),
            if config.immediate {
                ", Immediate classes too"
            } else {
                ""
            }
        )?;
        out.flush()?;
        let mut set = Controllers::new(client, crate::logging::sync_outcome);
        set.start_local_provisioner(config);
        set.run_until(crate::signal::terminated()).await;
        Ok(ExitCode::SUCCESS)
    })
}
