//! `kubevirt-controller run`: the controllers against a cluster until a signal.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{CliError, NodeArgs};
use crate::node::{self, NodeConfig};
use crate::{replicaset, vm};

pub(super) fn run(
    kubeconfig: Option<PathBuf>,
    install_crds: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, server) = connect(kubeconfig).await?;
        if install_crds {
            let changed = crate::install::ensure_crds(&client).await?;
            writeln!(
                out,
                "kubevirt-controller: CRDs installed ({changed} created or updated)"
            )?;
        }
        writeln!(
            out,
            "kubevirt-controller: VirtualMachine and VirtualMachineInstanceReplicaSet controllers on {server}"
        )?;
        out.flush()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let on = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(async move {
            crate::signal::terminated().await;
            let _ = stop.send(true);
        });
        tokio::join!(
            vm::controller::run(client.clone(), on(stopped.clone()), log),
            replicaset::controller::run(client, on(stopped), log),
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn node(args: NodeArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let node_name = match args.node_name {
        Some(n) => n,
        None => node::host_name().map_err(|e| {
            CliError::Connect(format!("reading the host name (give --node-name): {e}"))
        })?,
    };
    let launcher = args.launcher.unwrap_or_else(node::default_launcher);
    let config = NodeConfig {
        node_name,
        launcher,
        run_root: args.run_root,
        cache_dir: args.cache_dir,
        volumes_dir: args.volumes_dir,
        launcher_args: node::plain_http_args(&args.plain_http),
        claim_unscheduled: !args.only_scheduled,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, server) = connect(args.kubeconfig).await?;
        writeln!(
            out,
            "kubevirt-controller: node agent {} on {server} (launcher {})",
            config.node_name,
            config.launcher.display()
        )?;
        out.flush()?;
        node::agent::run(client, config, crate::signal::terminated(), log).await;
        Ok(ExitCode::SUCCESS)
    })
}

fn log(r: Result<String, String>) {
    if let Err(e) = r {
        eprintln!("kubevirt-controller: {e}");
    }
}

async fn connect(kubeconfig: Option<PathBuf>) -> Result<(kube::Client, String), CliError> {
    let config = match kubeconfig {
        Some(path) => {
            let connect = |e: kube::config::KubeconfigError| {
                CliError::Connect(format!("{}: {e}", path.display()))
            };
            let file = Kubeconfig::read_from(&path).map_err(connect)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(connect)?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| CliError::Connect(e.to_string()))?,
    };
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| CliError::Connect(e.to_string()))?;
    Ok((client, server))
}
