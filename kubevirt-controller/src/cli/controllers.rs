//! `kubevirt-controller run|node`: the controllers against a cluster until a signal.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{CliError, NodeArgs};
use crate::controllers::Controllers;
use crate::node::{self, NodeConfig};

/// What `run` starts.
pub(super) struct RunOptions {
    pub kubeconfig: Option<PathBuf>,
    pub install_crds: bool,
    pub pods: Option<crate::vmi::PodConfig>,
    pub migrate_within_node: bool,
    pub data_volumes: Option<crate::cdi::datavolume::DataVolumeConfig>,
    pub metrics: super::MetricsArgs,
}

pub(super) fn run(options: RunOptions, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let RunOptions {
        kubeconfig,
        install_crds,
        pods,
        migrate_within_node,
        data_volumes,
        metrics,
    } = options;
    super::on_cluster(kubeconfig.clone(), |client, server| async move {
        metrics
            .serve(crate::metrics::controller(client.clone()), out)
            .await?;
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
        let mut set = Controllers::new(client, crate::logging::sync_outcome);
        set.start_cluster_controllers();
        writeln!(
            out,
            "kubevirt-controller: VirtualMachineSnapshot and VirtualMachineRestore controllers"
        )?;
        set.start_snapshot_controllers();
        if let Some(config) = pods {
            writeln!(
                out,
                "kubevirt-controller: VirtualMachineInstance controller (virt-launcher pods of {}, launcher root {})",
                config.launcher_image,
                config.launcher_root.display()
            )?;
            set.start_vmi_controller(config.clone());
            writeln!(
                out,
                "kubevirt-controller: VirtualMachineInstanceMigration controller{}",
                if migrate_within_node {
                    " (targets may share their source's node)"
                } else {
                    ""
                }
            )?;
            set.start_migration_controller(crate::migration::controller::MigrationConfig {
                pods: config,
                within_node: migrate_within_node,
            });
        }
        if let Some(config) = data_volumes {
            writeln!(
                out,
                "kubevirt-controller: DataVolume controller (importer pods of {})",
                config.importer_image
            )?;
            set.start_data_volume_controller(config);
        }
        out.flush()?;
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
    let (mode, run_root) = args.mode.mode(args.run_root.clone())?;
    let peers = match (&args.endpoint_listen, &endpoint_token) {
        (Some(listen), Some(token)) => Some(crate::api::agents::NodeAgents {
            addressing: crate::api::agents::Addressing::NodePort {
                port: listen.port(),
                tls: match &args.endpoint_ca_file {
                    Some(ca) => Some(super::api::agent_tls(
                        ca,
                        node::endpoint::AGENT_SERVER_NAME.to_string(),
                    )?),
                    None => None,
                },
            },
            token: token.clone(),
        }),
        _ => None,
    };
    let config = NodeConfig {
        node_name,
        launcher,
        run_root,
        cache_dir: args.cache_dir,
        volumes_dir: args.volumes_dir,
        launcher_args: node::plain_http_args(&args.plain_http),
        claim_unscheduled: !args.only_scheduled,
        peers,
    };
    super::on_cluster(args.kubeconfig.clone(), |client, server| async move {
        writeln!(
            out,
            "kubevirt-controller: node agent {} on {server} (launcher {}, {} mode, run root {})",
            config.node_name,
            config.launcher.display(),
            match mode {
                node::AgentMode::Direct => "direct",
                node::AgentMode::Pods { .. } => "pods",
            },
            config.run_root.display()
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
        let plugins = (!args.no_device_plugins && args.device_plugin_dir.is_dir()).then(|| {
            use crate::node::deviceplugin::{Plugins, kubevirt_devices};
            Plugins::start(
                args.device_plugin_dir.clone(),
                kubevirt_devices(args.max_devices),
            )
        });
        if plugins.is_some() {
            writeln!(
                out,
                "kubevirt-controller: device plugins in {}",
                args.device_plugin_dir.display()
            )?;
        }
        let collect = crate::metrics::node_agent(client.clone(), config.clone(), mode.clone());
        args.metrics.serve(collect, out).await?;
        let mut set = Controllers::new(client, crate::logging::sync_outcome);
        set.start_node_agent_in(config, mode);
        set.run_until(crate::signal::terminated()).await;
        if let Some(p) = plugins {
            p.stop().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}
