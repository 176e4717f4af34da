//! `kubevirt-local up`: the whole local system in one process, the embedded default. The API
//! server (HTTPS, bearer token, kubeconfig in the data directory), the KubeVirt CRDs installed
//! on it, the VirtualMachine and VirtualMachineInstanceReplicaSet controllers, and the node agent that runs a `kubevirt-launcher` per
//! VMI on this machine. The controllers are the same code `kubevirt-controller run|node` runs
//! against a real cluster; here they talk to the local server through its kubeconfig.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use kubevirt_controller::install::{InstallError, ensure_crds};
use kubevirt_controller::node::NodeConfig;
use tokio::sync::watch;

use crate::server::{self, State};
use crate::setup::{self, SetupError};
use crate::storage::{Store, StoreError};

/// What `up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Database, certificates, token, kubeconfig, and the node's directories (`vmis/`,
    /// `images/`, `volumes/`).
    pub data_dir: PathBuf,
    /// Where the API server listens (port 0 picks one).
    pub listen: SocketAddr,
    /// How many changes the watch history keeps.
    pub watch_history: u64,
    /// The node agent, or `None` to run only the API server and the controllers.
    pub node: Option<NodeOptions>,
}

/// The local node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's name.
    pub node_name: String,
    /// The `kubevirt-launcher` binary.
    pub launcher: PathBuf,
    /// More arguments for every launcher.
    pub launcher_args: Vec<String>,
}

/// Errors starting the local system.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The data directory could not be prepared.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Certificates, token or kubeconfig.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The server's state could not be built.
    #[error("starting the API server: {0}")]
    Server(String),
    /// The in-process client could not be made from the kubeconfig.
    #[error("connecting to the local API server: {0}")]
    Client(String),
    /// The CRDs could not be installed.
    #[error(transparent)]
    Install(#[from] InstallError),
}

/// What a started system tells its caller.
#[derive(Debug, Clone)]
pub struct Started {
    /// The API server's URL.
    pub url: String,
    /// The kubeconfig for kubectl.
    pub kubeconfig: PathBuf,
}

/// Runs the local system until `shutdown` resolves; `on_start` hears where it serves once the
/// CRDs are installed and the controllers run. Launchers still running at shutdown are stopped.
pub async fn run(
    opts: UpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(&Started),
) -> Result<(), UpError> {
    let dir = &opts.data_dir;
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| UpError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let store = Store::open(&dir.join("state.db"))?.with_history(opts.watch_history);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| UpError::Io {
            path: PathBuf::from(opts.listen.to_string()),
            source,
        })?;
    let addr = listener.local_addr().map_err(io(dir))?;
    let tls = setup::tls(dir)?;
    let token = setup::token(dir)?;
    let url = format!("https://{addr}");
    let kubeconfig = setup::kubeconfig(dir, &url, Some(&tls.ca_pem), Some(&token))?;
    let state = State::new(store, Some(token), addr.to_string())
        .map_err(|e| UpError::Server(e.to_string()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(server::serve(
        listener,
        state,
        Some(tls.config),
        stopped(stop_rx.clone()),
    ));

    let file = kube::config::Kubeconfig::read_from(&kubeconfig)
        .map_err(|e| UpError::Client(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|e| UpError::Client(e.to_string()))?;
    let client = kube::Client::try_from(config).map_err(|e| UpError::Client(e.to_string()))?;
    ensure_crds(&client).await?;

    let log = |what: &'static str| {
        move |r: Result<String, String>| {
            if let Err(e) = r {
                eprintln!("kubevirt-local: {what}: {e}");
            }
        }
    };
    let mut tasks = vec![
        tokio::spawn(kubevirt_controller::vm::controller::run(
            client.clone(),
            stopped(stop_rx.clone()),
            log("vm controller"),
        )),
        tokio::spawn(kubevirt_controller::replicaset::controller::run(
            client.clone(),
            stopped(stop_rx.clone()),
            log("replica set controller"),
        )),
    ];
    if let Some(node) = opts.node {
        let config = NodeConfig {
            node_name: node.node_name,
            launcher: node.launcher,
            run_root: dir.join("vmis"),
            cache_dir: dir.join("images"),
            volumes_dir: dir.join("volumes"),
            launcher_args: node.launcher_args,
            claim_unscheduled: true,
        };
        tasks.push(tokio::spawn(kubevirt_controller::node::agent::run(
            client.clone(),
            config,
            stopped(stop_rx.clone()),
            log("node agent"),
        )));
    }
    on_start(&Started { url, kubeconfig });

    shutdown.await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = api.await;
    Ok(())
}
