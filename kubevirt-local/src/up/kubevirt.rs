//! KubeVirt's (and CDI's) components as `up` runs them in process, what `up --bare` leaves to
//! the operator's pods: the KubeVirt CRDs, the VirtualMachine, replica-set and snapshot
//! controllers, the DataVolume controller, the VMI controller with the node agent in pods mode
//! (or the node agent running launchers itself), the node agent's endpoint and the embedded
//! subresource and upload APIs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kubevirt_controller::api::agents::{Addressing, NodeAgents};
use kubevirt_controller::api::{Authentication, Subresources};
use kubevirt_controller::cdi::datavolume::DataVolumeConfig;
use kubevirt_controller::cdi::upload::api::Uploads;
use kubevirt_controller::cdi::upload::token::TokenKey;
use kubevirt_controller::controllers::Controllers;
use kubevirt_controller::migration::controller::MigrationConfig;
use kubevirt_controller::node::endpoint::{self, EndpointConfig};
use kubevirt_controller::node::{AgentMode, NodeConfig};
use kubevirt_controller::vmi::PodConfig;

use super::{Launchers, NodeOptions, ServedImages, UpError, absolute};
use crate::server::State;

/// What the components are started with.
pub(super) struct KubeVirtParts<'a> {
    /// The client of the local API server.
    pub client: kube::Client,
    /// The data directory.
    pub dir: &'a Path,
    /// The API server's listen address (the node endpoint takes its family's loopback).
    pub listen: &'a SocketAddr,
    /// The node agent, if one runs.
    pub node: Option<NodeOptions>,
    /// What the node's registry serves, when it runs.
    pub served: Option<&'a ServedImages>,
    /// Whether the kubelet runs (VMIs in pods, DataVolumes filled by importer pods).
    pub kubelet: bool,
}

/// Starts KubeVirt's controllers on `controllers`, the node agent and the embedded APIs on
/// `state`; where the VMIs' launchers run, when there is a node agent.
pub(super) async fn start(
    controllers: &mut Controllers,
    state: &State,
    parts: KubeVirtParts<'_>,
) -> Result<Option<Launchers>, UpError> {
    let KubeVirtParts {
        client,
        dir,
        listen,
        node,
        served,
        kubelet,
    } = parts;
    controllers.start_cluster_controllers();
    // KubeVirt's user roles, as virt-operator installs them (aggregated into view/edit/admin).
    state
        .ensure_cluster_objects(
            crate::server::authz::CLUSTER_ROLES,
            crate::semantics::rbac_bootstrap::kubevirt_cluster_roles(),
        )
        .map_err(UpError::from)?;
    // KubeVirt's VM snapshots and restores (their volumes are cut by the CSI snapshot
    // controllers the plane runs for the local driver).
    controllers.start_snapshot_controllers();
    // DataVolumes are filled by importer pods: with the kubelet and an importer image.
    let importer_image = served
        .and_then(|s| s.importer_image.clone())
        .filter(|_| kubelet);
    if let Some(image) = importer_image {
        let mut config = DataVolumeConfig::new(image);
        // The node's plain-HTTP registries are CDI's insecure registries too (registry imports).
        config.insecure_registries = node
            .as_ref()
            .map(|n| n.plain_http.clone())
            .unwrap_or_default();
        controllers.start_data_volume_controller(config);
    }
    let pod_image = node.as_ref().and_then(|node| {
        let served = served.and_then(|s| s.launcher_image.clone());
        pod_launcher_image(node, kubelet, served)
    });
    let launchers = node.as_ref().map(|_| match pod_image {
        Some(_) => Launchers::Pods,
        None => Launchers::Direct,
    });
    let launcher_root = absolute(&dir.join("node/launchers"));
    let run_root = match pod_image {
        Some(_) => launcher_root.clone(),
        None => dir.join("vmis"),
    };
    let agents = match &node {
        Some(node) => serve_node_endpoint(&node.node_name, run_root.clone(), listen).await?,
        None => NodeAgents {
            addressing: Addressing::Fixed(Default::default()),
            token: String::new(),
        },
    };
    let _ = state.uploads.set(
        Uploads {
            client: client.clone(),
            key: TokenKey::generate(),
        }
        .router(),
    );
    let _ = state.subresources.set(
        Subresources {
            client,
            agents: agents.clone(),
            authentication: Authentication::Done,
        }
        .router(),
    );
    if let Some(node) = node {
        let config = NodeConfig {
            node_name: node.node_name,
            launcher: node.launcher,
            run_root,
            cache_dir: absolute(&dir.join("images")),
            volumes_dir: dir.join("volumes"),
            launcher_args: node.launcher_args,
            claim_unscheduled: true,
            peers: Some(agents.clone()),
        };
        match pod_image {
            Some(launcher_image) => {
                let working_dir = std::env::current_dir().map_err(|source| UpError::Io {
                    path: PathBuf::from("."),
                    source,
                })?;
                let pods = PodConfig {
                    launcher_image,
                    launcher_root,
                    image_cache: config.cache_dir.clone(),
                    registry_config_dir: node.registry_config_dir,
                    plain_http_registries: node.plain_http,
                    working_dir: working_dir.clone(),
                };
                controllers.start_vmi_controller(pods.clone());
                // One node: a migration's target runs beside its source.
                controllers.start_migration_controller(MigrationConfig {
                    pods,
                    within_node: true,
                });
                controllers.start_node_agent_in(config, AgentMode::Pods { working_dir });
            }
            None => controllers.start_node_agent(config),
        }
    }
    Ok(launchers)
}

/// Starts the local node agent's endpoint (console, pause, ...) on the loopback address of the
/// API server's family, with a fresh token; the subresource API reaches the agent through it.
async fn serve_node_endpoint(
    node_name: &str,
    run_root: PathBuf,
    listen: &SocketAddr,
) -> Result<NodeAgents, UpError> {
    let loopback: SocketAddr = if listen.is_ipv6() {
        "[::1]:0".parse().unwrap_or(*listen)
    } else {
        "127.0.0.1:0".parse().unwrap_or(*listen)
    };
    let listener = tokio::net::TcpListener::bind(loopback)
        .await
        .map_err(|source| UpError::Listen {
            address: loopback,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| UpError::Listen {
        address: loopback,
        source,
    })?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    tokio::spawn(endpoint::serve(
        listener,
        EndpointConfig {
            run_root,
            token: token.clone(),
        },
    ));
    Ok(NodeAgents::single(node_name, address, token))
}

/// The launcher image of `node`'s VMI pods (named, or the node registry's), when its VMIs run
/// in pods: with the kubelet and an image, unless `--direct-launchers`. `None`: direct mode.
fn pod_launcher_image(node: &NodeOptions, kubelet: bool, served: Option<String>) -> Option<String> {
    if node.direct_launchers || !kubelet {
        return None;
    }
    let image = node.launcher_image.clone().or(served);
    if image.is_none() {
        tracing::warn!(
            "no launcher image (the node's registry found no kubevirt-launcher binary and no --launcher-image was named): VMIs run as the node agent's children, outside pods"
        );
    }
    image
}
