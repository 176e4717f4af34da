//! The node agent (upstream's virt-handler): runs a `kubevirt-launcher` for every VMI on this
//! node and keeps the VMI's status in line with it.
//!
//! [`report::patch`] maps what a launcher reports to the VMI status (pure, tested without a VM);
//! [`launcher::Launcher`] is one launcher process and its control socket; [`agent::run`] is the
//! loop. On the local single-node control plane the agent also places VMIs that no node has
//! claimed yet on itself ([`NodeConfig::claim_unscheduled`]).
//!
//! The agent runs in one of two [`AgentMode`]s: `Direct` spawns every launcher itself (its
//! children, on the host); `Pods` finds the launchers the VMI controller's virt-launcher pods run
//! ([`crate::vmi`]), prepares their pod network and starts them ([`pod`]).

pub mod adopt;
pub mod agent;
pub mod claim_info;
pub mod datagrams;
pub mod deviceplugin;
pub mod endpoint;
pub mod events;
pub mod guest_port;
pub mod launcher;
pub mod memory;
pub mod migration;
pub mod owner;
pub mod pod;
pub mod report;
pub mod splice;
pub mod sweep;

use std::path::PathBuf;

/// Where and how the agent runs launchers.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's name (`status.nodeName` of the VMIs it runs).
    pub node_name: String,
    /// The `kubevirt-launcher` binary.
    pub launcher: PathBuf,
    /// Per-VMI run directories go below this (`<ns>/<name>-<uid>`).
    pub run_root: PathBuf,
    /// The launchers' image cache.
    pub cache_dir: PathBuf,
    /// Where claims are prepared for the launchers (`<dir>/<volume>/disk.img`).
    pub volumes_dir: PathBuf,
    /// More arguments for every launcher (e.g. `--plain-http-registry HOST:PORT`).
    pub launcher_args: Vec<String>,
    /// Also run VMIs no node has claimed (the local single-node control plane).
    pub claim_unscheduled: bool,
    /// How this agent reaches the node agents of other nodes (and its own, by its node name):
    /// a live migration's source relays the guest to the target's agent. `None`: no
    /// migrations from this node.
    pub peers: Option<crate::api::agents::NodeAgents>,
}

/// How the node agent gets its launchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentMode {
    /// It spawns a `kubevirt-launcher run` per VMI itself, in `<run_root>/<ns>/<name>-<uid8>`
    /// (the agent's children, outside any pod).
    Direct,
    /// Every VMI runs in its virt-launcher pod (`kubevirt-launcher serve`): the agent finds the
    /// launcher at `<run_root>/<uid>/control.sock` (`run_root` is then the pods' launcher root,
    /// [`crate::vmi::PodConfig::launcher_root`]), prepares its pod network, sends it `start` once
    /// and follows it. It never spawns or kills a launcher on its own start or stop: the pods
    /// outlive it.
    Pods {
        /// What relative `oci:PATH` references in VMIs are relative to (the VMI controller's
        /// [`crate::vmi::PodConfig::working_dir`]): they are made absolute before `start`.
        working_dir: PathBuf,
    },
}

/// This machine's host name, the default node name.
pub fn host_name() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string())
}

/// The default `kubevirt-launcher`: next to the running binary (as the release ships them),
/// else whatever `PATH` finds.
pub fn default_launcher() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("kubevirt-launcher")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("kubevirt-launcher"))
}

/// The launcher arguments that let it pull from `registries` over plain HTTP.
pub fn plain_http_args(registries: &[String]) -> Vec<String> {
    registries
        .iter()
        .flat_map(|r| ["--plain-http-registry".to_string(), r.clone()])
        .collect()
}

/// Errors of the node agent.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Something a non-root launcher needs could not be given to it.
    #[error("preparing for the launcher: {0}")]
    Owner(#[from] owner::OwnerError),
    /// A file or process operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A launcher already runs in the VMI's run directory and cannot be taken over yet (it is
    /// still starting, or runs another VMI): no second one may start.
    #[error("a launcher runs in {run_dir} already: {why}")]
    LauncherBusy {
        /// The run directory.
        run_dir: PathBuf,
        /// Why it cannot be adopted now.
        why: String,
    },
    /// The VMI could not be encoded for the launcher.
    #[error("encoding the VMI: {0}")]
    Encode(#[source] serde_json::Error),
    /// The API server refused a request.
    #[error("{what} virtualmachineinstance {name}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The VMI.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// `kubevirt-launcher pod-network` could not be run.
    #[error("running {launcher} pod-network: {source}")]
    PodNetwork {
        /// The launcher binary.
        launcher: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A sync failed (adding or removing the finalizer, or the sync itself).
    #[error(transparent)]
    Reconcile(Box<kube::runtime::finalizer::Error<NodeError>>),
}
