//! The controllers a process runs, as one set with one stop: `kubevirt-controller run|node` and
//! `kubevirt-local up` start them through here, and connect through [`connect`] /
//! [`client_for`].
//!
//! ```no_run
//! # async fn demo(client: kube::Client) {
//! use kubevirt_controller::controllers::Controllers;
//! let mut set = Controllers::new(client, kubevirt_controller::logging::sync_outcome);
//! set.start_cluster_controllers();
//! set.run_until(kubevirt_controller::signal::terminated()).await;
//! # }
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::node::{AgentMode, NodeConfig};

/// What each controller reports after a sync: `(which controller, outcome)`.
pub type OnSync = Arc<dyn Fn(&'static str, Result<String, String>) + Send + Sync>;

/// A running set of controllers sharing one client and one stop signal.
pub struct Controllers {
    client: Client,
    on_sync: OnSync,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Controllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controllers")
            .field("running", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Controllers {
    /// An empty set on `client`; every controller reports its syncs to `on_sync`.
    pub fn new(
        client: Client,
        on_sync: impl Fn(&'static str, Result<String, String>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            client,
            on_sync: Arc::new(on_sync),
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// A future that resolves when the set is stopped.
    fn stopped(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    fn report(&self, what: &'static str) -> impl Fn(Result<String, String>) + Send + 'static {
        let on_sync = Arc::clone(&self.on_sync);
        move |r| on_sync(what, r)
    }

    /// Start the cluster-wide controllers: VirtualMachine and VirtualMachineInstanceReplicaSet.
    pub fn start_cluster_controllers(&mut self) {
        let vm = crate::vm::controller::run(
            self.client.clone(),
            self.stopped(),
            self.report("vm controller"),
        );
        let rs = crate::replicaset::controller::run(
            self.client.clone(),
            self.stopped(),
            self.report("replica set controller"),
        );
        self.tasks.push(tokio::spawn(vm));
        self.tasks.push(tokio::spawn(rs));
    }

    /// Start KubeVirt's snapshot controllers: VirtualMachineSnapshot (with its content) and
    /// VirtualMachineRestore. Snapshots need the `snapshot.storage.k8s.io` CRDs and a CSI
    /// snapshotter for the volumes' driver; without them a snapshot of a VM with claims fails
    /// naming each volume.
    pub fn start_snapshot_controllers(&mut self) {
        let snapshots = crate::snapshot::controller::run(
            self.client.clone(),
            self.stopped(),
            self.report("vm snapshot controller"),
        );
        let restores = crate::snapshot::restore_controller::run(
            self.client.clone(),
            self.stopped(),
            self.report("vm restore controller"),
        );
        self.tasks.push(tokio::spawn(snapshots));
        self.tasks.push(tokio::spawn(restores));
    }

    /// Start the VirtualMachineInstance controller: every VMI gets a virt-launcher pod rendered
    /// with `config`. Only for clusters whose node agents run in pod mode
    /// ([`crate::node::AgentMode::Pods`]); a node agent in direct mode runs launchers itself and
    /// must not meet pods.
    pub fn start_vmi_controller(&mut self, config: crate::vmi::PodConfig) {
        let vmi = crate::vmi::controller::run(
            self.client.clone(),
            config,
            self.stopped(),
            self.report("vmi controller"),
        );
        self.tasks.push(tokio::spawn(vmi));
    }

    /// Start the live-migration controller: every VirtualMachineInstanceMigration gets its
    /// target pod and moves along as the node agents report (beside a VMI controller:
    /// [`Self::start_vmi_controller`]).
    pub fn start_migration_controller(
        &mut self,
        config: crate::migration::controller::MigrationConfig,
    ) {
        let migrations = crate::migration::controller::run(
            self.client.clone(),
            config,
            self.stopped(),
            self.report("migration controller"),
        );
        self.tasks.push(tokio::spawn(migrations));
    }

    /// Start the DataVolume controller (CDI's): every DataVolume gets its claim and an importer
    /// pod running `config`'s importer image; and the StorageProfile controller beside it. Needs pods that run (a kubelet) and claims that
    /// bind (a provisioner).
    pub fn start_data_volume_controller(
        &mut self,
        config: crate::cdi::datavolume::DataVolumeConfig,
    ) {
        let config_for_uploads = config.clone();
        let dv = crate::cdi::datavolume::controller::run(
            self.client.clone(),
            config,
            self.stopped(),
            self.report("datavolume controller"),
        );
        self.tasks.push(tokio::spawn(dv));
        // Its claims' defaults: a StorageProfile per StorageClass.
        let profiles = crate::cdi::storageprofile::controller::run(
            self.client.clone(),
            self.stopped(),
            self.report("storageprofile controller"),
        );
        self.tasks.push(tokio::spawn(profiles));
        // Uploads straight into claims (`virtctl image-upload pvc`).
        let uploads = crate::cdi::upload::pvc::run(
            self.client.clone(),
            config_for_uploads,
            self.stopped(),
            self.report("upload controller"),
        );
        self.tasks.push(tokio::spawn(uploads));
    }

    /// Start the node agent that runs this node's VMIs, in direct mode (it spawns their
    /// launchers).
    pub fn start_node_agent(&mut self, config: NodeConfig) {
        self.start_node_agent_in(config, AgentMode::Direct);
    }

    /// Start the node agent that runs this node's VMIs in `mode` (with
    /// [`AgentMode::Pods`], beside a VMI controller: [`Self::start_vmi_controller`]).
    pub fn start_node_agent_in(&mut self, config: NodeConfig, mode: AgentMode) {
        let agent = crate::node::agent::run(
            self.client.clone(),
            config,
            mode,
            self.stopped(),
            self.report("node agent"),
        );
        self.tasks.push(tokio::spawn(agent));
    }

    /// Start this node's local-volume provisioner and resizer ([`crate::storage`]). Its loop
    /// devices stay attached when the set stops: [`crate::storage::detach_all`] detaches them.
    pub fn start_local_provisioner(&mut self, config: crate::storage::ProvisionerConfig) {
        let provisioner = crate::storage::run(
            self.client.clone(),
            config,
            self.stopped(),
            self.report("local volume provisioner"),
        );
        self.tasks.push(tokio::spawn(provisioner));
    }

    /// Stop every controller and wait until each has finished (a node agent in direct mode
    /// stops its launchers first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Run until `shutdown` resolves, then [`stop`](Self::stop).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.stop().await;
    }
}

/// Connecting to a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file could not be read or used.
    #[error("{}: {source}", path.display())]
    Kubeconfig {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// A kubeconfig built in memory could not be used.
    #[error("the kubeconfig: {0}")]
    Config(#[from] KubeconfigError),
    /// No kubeconfig given and none found (KUBECONFIG, ~/.kube/config, in-cluster).
    #[error("finding a kubeconfig (give --kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built (TLS setup).
    #[error("building the client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the cluster `kubeconfig` names (its current context), or the one the
/// environment names (`KUBECONFIG`, `~/.kube/config`, in-cluster) when `None`; with the server's
/// URL.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<(Client, String), ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| ConnectError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::infer().await?,
    };
    let server = config.cluster_url.to_string();
    Ok((Client::try_from(config)?, server))
}

/// A client for a kubeconfig held in memory (its current context).
pub async fn client_for(kubeconfig: Kubeconfig) -> Result<Client, ConnectError> {
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}
