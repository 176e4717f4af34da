//! `kubevirt-controller run|node`: the controllers against a cluster until a signal.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{CliError, NodeArgs};
use crate::controllers::{Controllers, connect};
use crate::node::{self, NodeConfig};

pub(super) fn run(
    kubeconfig: Option<PathBuf>,
    install_crds: bool,
    out: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, server) = connect(kubeconfig.as_deref()).await?;
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
        let mut set = Controllers::new(client, crate::logging::sync_outcome);
        set.start_cluster_controllers();
        set.run_until(crate::signal::terminated()).await;
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn node(args: NodeArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let node_name = match args.node_name {
        Some(n) => n,
        None => node::host_name().map_err(CliError::HostName)?,
    };
    let launcher = args.launcher.unwrap_or_else(node::default_launcher);
    let endpoint_token = match &args.endpoint_token_file {
        Some(path) => Some(super::api::read_token(path)?),
        None => None,
    };
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
        let (client, server) = connect(args.kubeconfig.as_deref()).await?;
        writeln!(
            out,
            "kubevirt-controller: node agent {} on {server} (launcher {})",
            config.node_name,
            config.launcher.display()
        )?;
        out.flush()?;
        if let (Some(listen), Some(token)) = (args.endpoint_listen, endpoint_token) {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            writeln!(
                out,
                "kubevirt-controller: node agent endpoint on {}",
                listener.local_addr()?
            )?;
            let endpoint = node::endpoint::EndpointConfig {
                run_root: config.run_root.clone(),
                token,
            };
            match (&args.endpoint_tls_cert_file, &args.endpoint_tls_key_file) {
                (Some(cert), Some(key)) => {
                    let tls = crate::api::serve::tls_config(cert, key, None)
                        .map_err(|e| CliError::Setup(e.to_string()))?;
                    tokio::spawn(node::endpoint::serve_tls(listener, endpoint, tls));
                }
                _ => {
                    tokio::spawn(node::endpoint::serve(listener, endpoint));
                }
            }
        }
        let mut set = Controllers::new(client, crate::logging::sync_outcome);
        set.start_node_agent(config);
        set.run_until(crate::signal::terminated()).await;
        Ok(ExitCode::SUCCESS)
    })
}
