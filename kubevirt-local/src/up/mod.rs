//! `kubevirt-local up`: the whole local system in one process, the embedded default. The API
//! server (HTTPS, bearer token, kubeconfig in the data directory) and the local control plane's
//! own controllers ([`crate::plane`]: the scheduler, the workload controllers, the PV binder and
//! the CSI snapshot controller, with the snapshot CRDs and the default `local` StorageClass and
//! VolumeSnapshotClass); with the kubelet the node's own registry ([`RegistryOptions`]: the
//! pause image every sandbox runs and the virt-launcher image, built from the installed binaries
//! and served on loopback, named in the ready JSON) and the local-volume provisioner. Beside
//! them, unless `--bare` ([`Components::Bare`]), KubeVirt's components ([`kubevirt`]): the
//! KubeVirt CRDs, the VirtualMachine, replica-set, snapshot, DataVolume and VMI controllers and
//! the node agent that runs a `kubevirt-launcher` per VMI on this machine. The controllers are
//! the same code `kubevirt-controller run|node` runs against a real cluster (one
//! [`Controllers`] set); here they talk to the local server through its kubeconfig.
//!
//! Readiness is announced once, when the whole plane is ready (the API serving, the CRDs
//! established, the controllers started): `/readyz` turns 200, the kubeconfig appears (written
//! atomically; a stale one is removed at start), the ready file appears (`--ready-file`, JSON,
//! atomically) and the caller's `on_start` hears it. Anything a client does after any of these
//! works at once.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kubevirt_controller::controllers::{ConnectError, Controllers, client_for};
use kubevirt_controller::install::{InstallError, ensure_crds};
use kubevirt_controller::storage::ProvisionerConfig;
use kubevirt_kubelet::images::{NodeRegistry, NodeRegistryConfig};
use serde_json::json;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::server::{self, State};
use crate::setup::{self, SetupError};
use crate::storage::{Store, StoreError};

mod kubevirt;
mod pods_api;
use kubevirt::KubeVirtParts;

/// The readiness gate held until the KubeVirt CRDs are established.
pub const CRDS_GATE: &str = "poststarthook/kubevirt-crds-established";
/// The readiness gate held until the controllers (and the node agent) run.
pub const CONTROLLERS_GATE: &str = "poststarthook/kubevirt-controllers";

/// What `up` runs beside the plane (the API server, the plane's controllers, the kubelet, the
/// node's registry, the local volumes and the snapshot API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Components {
    /// KubeVirt's and CDI's components in process: their CRDs, controllers, the node agent and
    /// the subresource and upload APIs (plain `up`).
    #[default]
    KubeVirt,
    /// None of them (`up --bare`): `kubectl create -f kubevirt-operator.yaml` and
    /// `kubevirt-cr.yaml` install them as pods on the node. The readiness gate
    /// [`CRDS_GATE`] is not held and [`CONTROLLERS_GATE`] waits for the plane's controllers
    /// and the kubelet only.
    Bare,
}

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
    /// Where to write [`Started`] as JSON once ready (removed again at a clean stop).
    pub ready_file: Option<PathBuf>,
    /// The kubelet that runs pods through containerd, or `None` for no pods.
    pub kubelet: Option<KubeletOptions>,
    /// The API server's caps on requests in flight.
    pub inflight: crate::server::inflight::Limits,
}

/// The kubelet (pods as containers through containerd). Its files live in `<data dir>/node`:
/// `containerd/` (a private containerd's config.toml, root, state, socket, CNI network and
/// registry hosts), `pods/<uid>/volumes/` and `logs/<ns>_<pod>_<uid>/<container>/<n>.log`.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// The node's name.
    pub node_name: String,
    /// Our own containerd, or one already running.
    pub runtime: kubevirt_kubelet::Runtime,
    /// Stop the pods (and a private containerd) when `up` stops; by default they keep running
    /// and the next `up` adopts them.
    pub stop_pods_on_exit: bool,
    /// The node's registry (the pause and launcher images, `--image` layouts), or `None`.
    pub registry: Option<RegistryOptions>,
}

/// The node's own registry (see [`kubevirt_kubelet::images::node_registry`]): its images are
/// written under `<data dir>/node/registry`. A private containerd trusts it over plain HTTP
/// and, unless a sandbox image was named, runs its pause image as every pod's sandbox.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Where it listens; `None`: 127.0.0.1 on the last run's port if free, else any free port.
    pub listen: Option<SocketAddr>,
    /// The static busybox the pause image is made of.
    pub busybox: PathBuf,
    /// The `kubevirt-launcher` binary the launcher image is made of; `None`: no launcher image.
    pub launcher: Option<PathBuf>,
    /// The `kubevirt-controller` and `qemu-img` binaries the CDI importer image is made of;
    /// `None`: no importer image (DataVolumes are not filled).
    pub importer: Option<(PathBuf, PathBuf)>,
    /// More OCI layouts to serve (`--image NAME:TAG=DIR`).
    pub images: Vec<kubevirt_kubelet::images::served::ServedImage>,
    /// Keep the runtime's configured sandbox image instead of the served pause image.
    pub keep_sandbox_image: bool,
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
    /// Registries (`host:port`) the launchers pull containerDisks from over plain HTTP.
    pub plain_http: Vec<String>,
    /// The registry host configuration (containerd's `certs.d`) the launchers read, if any.
    pub registry_config_dir: Option<PathBuf>,
    /// The launcher image of the VMIs' pods; `None` takes the one the node's registry serves.
    pub launcher_image: Option<String>,
    /// Run every launcher as the node agent's child (direct mode), even with the kubelet.
    pub direct_launchers: bool,
}

impl NodeOptions {
    /// The node `node_name` running `launcher`: launchers in pods when there is a kubelet and
    /// a launcher image, no extra launcher arguments, no plain-HTTP registries.
    pub fn new(node_name: impl Into<String>, launcher: PathBuf) -> NodeOptions {
        NodeOptions {
            node_name: node_name.into(),
            launcher,
            launcher_args: Vec::new(),
            plain_http: Vec::new(),
            registry_config_dir: None,
            launcher_image: None,
            direct_launchers: false,
        }
    }
}

/// Where the VMIs' launchers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launchers {
    /// Each VMI in its virt-launcher pod: the VMI controller creates it, the scheduler places
    /// it, the kubelet runs it, the node agent prepares it (upstream's architecture).
    Pods,
    /// Each VMI's launcher a child of the node agent (no kubelet, or `--direct-launchers`).
    Direct,
}

impl Launchers {
    /// `"pods"` or `"direct"`, as the ready JSON says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Launchers::Pods => "pods",
            Launchers::Direct => "direct",
        }
    }
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
    /// The listen address could not be bound.
    #[error("listening on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// API aggregation could not be set up.
    #[error(transparent)]
    Aggregation(#[from] crate::server::aggregator::EnableError),
    /// Certificates, token, kubeconfig or ready file.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The server's state could not be built.
    #[error("starting the API server: {0}")]
    Server(#[from] ApiError),
    /// The in-process client could not be made from the kubeconfig.
    #[error("connecting to the local API server: {0}")]
    Client(#[from] ConnectError),
    /// The CRDs could not be installed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The node's registry could not start.
    #[error(transparent)]
    Registry(#[from] kubevirt_kubelet::images::NodeRegistryError),
    /// The default StorageClass could not be made.
    #[error("creating the default StorageClass {class}: {source}")]
    StorageClass {
        /// Its name.
        class: &'static str,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The snapshot CRDs or the default VolumeSnapshotClass could not be installed.
    #[error(transparent)]
    SnapshotApi(#[from] crate::volumes::snapshots::install::InstallError),
    /// The kubelet could not start.
    #[error("starting the kubelet (--no-kubelet runs without it): {0}")]
    Kubelet(#[from] kubevirt_kubelet::KubeletError),
}

/// What a started (ready) system tells its caller; the ready file and the JSON line on stdout
/// are [`Started::to_json`].
#[derive(Debug, Clone)]
pub struct Started {
    /// The address the API server is bound to.
    pub address: SocketAddr,
    /// The API server's URL.
    pub url: String,
    /// The kubeconfig for kubectl.
    pub kubeconfig: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// This process.
    pub pid: u32,
    /// The node's registry and what it serves, when it runs.
    pub registry: Option<ServedImages>,
    /// Where the VMIs' launchers run, when there is a node agent.
    pub launchers: Option<Launchers>,
}

/// What the node's registry serves, as image references for pods.
#[derive(Debug, Clone, Default)]
pub struct ServedImages {
    /// `host:port` of the registry.
    pub registry: String,
    /// `HOST:PORT/kubevirt-rs/virt-launcher:VERSION@sha256:…`, when a launcher was found.
    pub launcher_image: Option<String>,
    /// `HOST:PORT/kubevirt-rs/cdi-importer:VERSION@sha256:…`, when an importer was found.
    pub importer_image: Option<String>,
    /// The sandbox image the runtime runs (the served pause image unless one was named).
    pub sandbox_image: String,
    /// Every served `HOST:PORT/NAME:TAG`.
    pub images: Vec<String>,
}

impl Started {
    /// `{"address", "url", "kubeconfig", "dataDir", "pid", "registry", "launcherImage",
    /// "importerImage", "sandboxImage", "images", "vmiLaunchers"}`; registry to images are null (`images` empty)
    /// without the node's registry, `vmiLaunchers` (`"pods"`, `"direct"`) without a node agent.
    pub fn to_json(&self) -> serde_json::Value {
        let served = self.registry.clone().unwrap_or_default();
        let or_null = |s: String| (!s.is_empty()).then_some(s);
        json!({
            "address": self.address.to_string(),
            "url": self.url,
            "kubeconfig": self.kubeconfig,
            "dataDir": self.data_dir,
            "pid": self.pid,
            "registry": or_null(served.registry),
            "launcherImage": served.launcher_image,
            "importerImage": served.importer_image,
            "sandboxImage": or_null(served.sandbox_image),
            "images": served.images,
            "vmiLaunchers": self.launchers.map(Launchers::as_str),
        })
    }
}

/// Starts the node's registry and points a private runtime at it: trusted over plain HTTP, its
/// pause image as the sandbox image (unless one was named).
async fn start_registry(
    dir: &Path,
    kubelet: &mut KubeletOptions,
) -> Result<Option<(NodeRegistry, ServedImages)>, UpError> {
    let Some(opts) = &kubelet.registry else {
        return Ok(None);
    };
    let registry = NodeRegistry::start(NodeRegistryConfig {
        listen: opts.listen,
        dir: dir.join("node/registry"),
        busybox: opts.busybox.clone(),
        launcher: opts.launcher.clone(),
        launcher_tag: env!("CARGO_PKG_VERSION").to_string(),
        importer: opts.importer.clone(),
        images: opts.images.clone(),
    })
    .await?;
    let sandbox_image = match &mut kubelet.runtime {
        kubevirt_kubelet::Runtime::Private { config, .. } => {
            if !config.plain_http_registries.contains(&registry.host) {
                config.plain_http_registries.push(registry.host.clone());
            }
            if !opts.keep_sandbox_image {
                config.sandbox_image = registry.pause_image.clone();
            }
            config.sandbox_image.clone()
        }
        kubevirt_kubelet::Runtime::Existing(socket) => {
            tracing::warn!(
                registry = %registry.host,
                socket = %socket.display(),
                "the node's registry is served over plain HTTP: the existing containerd must trust it (a hosts.toml in its registry config_path) to pull the launcher image"
            );
            String::new()
        }
    };
    let served = ServedImages {
        registry: registry.host.clone(),
        launcher_image: registry.launcher_image.clone(),
        importer_image: registry.importer_image.clone(),
        sandbox_image,
        images: registry.images.clone(),
    };
    Ok(Some((registry, served)))
}

/// `path` made absolute (pods mount it as a hostPath; the launchers run elsewhere).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn remove_stale(path: &Path) -> Result<(), UpError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(UpError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Runs the local system with KubeVirt's components until `shutdown` resolves: [`run_with`]
/// [`Components::KubeVirt`].
pub async fn run(
    opts: UpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(&Started),
) -> Result<(), UpError> {
    run_with(opts, Components::KubeVirt, shutdown, on_start).await
}

/// Runs the local system with `components` until `shutdown` resolves; `on_start` hears where it
/// serves once the whole plane is ready (see the module docs). Direct launchers still running
/// at shutdown are stopped; launchers in pods live on with their pods.
pub async fn run_with(
    opts: UpOptions,
    components: Components,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(&Started),
) -> Result<(), UpError> {
    let dir = &opts.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| UpError::Io {
        path: dir.clone(),
        source,
    })?;
    // Their appearance announces readiness: none may be left from an earlier run.
    remove_stale(&dir.join("kubeconfig"))?;
    if let Some(ready) = &opts.ready_file {
        remove_stale(ready)?;
    }
    let store = Store::open(&dir.join("state.db"))?.with_history(opts.watch_history);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| UpError::Listen {
            address: opts.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| UpError::Listen {
        address: opts.listen,
        source,
    })?;
    // Pods reach the API server on the pod network's gateway (the private runtime's bridge),
    // at the port it listens on: the certificate is valid there too.
    let pod_gateway = opts.kubelet.as_ref().and_then(|k| match &k.runtime {
        kubevirt_kubelet::Runtime::Private { config, .. } => config.gateway().map(|(ip, _)| ip),
        kubevirt_kubelet::Runtime::Existing(_) => None,
    });
    let api_for_pods = match pod_gateway {
        Some(ip) => Some(SocketAddr::from((ip, pods_api::port(dir, address.port())?))),
        None => None,
    };
    let tls = setup::tls_for(
        dir,
        &pod_gateway.into_iter().map(Into::into).collect::<Vec<_>>(),
    )?;
    let token = setup::token(dir)?;
    let url = format!("https://{address}");
    let state = State::new(store, Some(token.clone()), address.to_string())?;
    state.inflight.set_limits(opts.inflight);
    let _ = state.client_certs.set(tls.client_auth.clone());
    let kubevirt = components == Components::KubeVirt;
    if kubevirt {
        state
            .readiness
            .hold(CRDS_GATE, "the KubeVirt CRDs are not established yet");
    }
    state
        .readiness
        .hold(CONTROLLERS_GATE, "the controllers are not started yet");

    let (stop_api, api_stopped) = watch::channel(false);
    let serve = |listener| {
        let mut rx = api_stopped.clone();
        tokio::spawn(server::serve(
            listener,
            state.clone(),
            Some(tls.config.clone()),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    };
    let api = serve(listener);
    server::aggregator::enable(&state, dir, Some(&tls.client_ca_pem))?;
    let availability = {
        let mut rx = api_stopped.clone();
        tokio::spawn(server::aggregator::availability::run(
            state.clone(),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    };

    let kubeconfig = setup::kubeconfig_for(&url, Some(&tls.ca_pem), Some(&token));
    let client = client_for(kubeconfig.clone()).await?;
    if kubevirt {
        ensure_crds(&client).await?;
    }
    crate::volumes::default_class::ensure_local_class(&client)
        .await
        .map_err(|source| UpError::StorageClass {
            class: crate::volumes::default_class::LOCAL_CLASS,
            source,
        })?;
    // The snapshot API (the external-snapshotter's CRDs on a cluster) and its default class.
    crate::volumes::snapshots::install::ensure_snapshot_api(&client).await?;
    if kubevirt {
        state.readiness.open(CRDS_GATE);
    }

    let published = crate::serviceaccounts::Published {
        ca_pem: tls.ca_pem.clone(),
        api: address,
    };
    let plane = crate::plane::LocalControllers::start(client.clone(), Some(published));
    let mut kubelet_opts = opts.kubelet.clone();
    let registry = match kubelet_opts.as_mut() {
        Some(k) => start_registry(dir, k).await?,
        None => None,
    };
    let kubelet = match &kubelet_opts {
        Some(k) => Some((
            kubevirt_kubelet::Kubelet::start(
                client.clone(),
                kubevirt_kubelet::KubeletConfig {
                    node_name: k.node_name.clone(),
                    data_dir: dir.join("node"),
                    runtime: k.runtime.clone(),
                    kubelet_port: 0,
                    api_for_pods,
                },
            )
            .await?,
            k.stop_pods_on_exit,
        )),
        None => None,
    };
    // The kubelet has made the pod bridge: the API server listens on its gateway too.
    let _api_for_pods = match api_for_pods.filter(|_| kubelet.is_some()) {
        Some(at) => match tokio::net::TcpListener::bind(at).await {
            Ok(listener) => Some(serve(listener)),
            Err(e) => {
                tracing::warn!(address = %at, error = %e, "pods cannot reach the API server");
                None
            }
        },
        None => None,
    };
    let mut controllers =
        Controllers::new(client.clone(), kubevirt_controller::logging::sync_outcome);
    // The node's volumes (the default StorageClass's): with the kubelet that mounts them. The
    // only node takes Immediate claims too. Plane infrastructure, as a cluster's storage
    // driver is: no KubeVirt install brings one.
    let volumes_root = absolute(&dir.join("node/volumes"));
    if let Some(k) = &kubelet_opts {
        controllers.start_local_provisioner(ProvisionerConfig {
            node_name: k.node_name.clone(),
            root: volumes_root.clone(),
            immediate: true,
        });
    }
    let launchers = match components {
        Components::KubeVirt => {
            kubevirt::start(
                &mut controllers,
                &state,
                KubeVirtParts {
                    client: client.clone(),
                    dir,
                    listen: &opts.listen,
                    node: opts.node.clone(),
                    served: registry.as_ref().map(|(_, served)| served),
                    kubelet: kubelet.is_some(),
                },
            )
            .await?
        }
        Components::Bare => None,
    };
    state.readiness.open(CONTROLLERS_GATE);

    let started = Started {
        address,
        url,
        kubeconfig: setup::write_kubeconfig(dir, &kubeconfig)?,
        data_dir: dir.clone(),
        pid: std::process::id(),
        registry: registry.as_ref().map(|(_, served)| served.clone()),
        launchers,
    };
    if let Some(ready) = &opts.ready_file {
        setup::write_atomic(ready, started.to_json().to_string().as_bytes())?;
    }
    on_start(&started);

    shutdown.await;
    controllers.stop().await;
    plane.stop().await;
    if let Some((kubelet, stop_pods)) = kubelet {
        kubelet.stop(stop_pods).await;
        // No pod uses a volume any more: their loop devices go (the next `up` attaches them
        // again); with pods left running they stay.
        if stop_pods {
            match kubevirt_controller::storage::detach_all(&volumes_root) {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!(devices = ?gone, "detached the volumes' loop devices")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("detaching the volumes' loop devices: {e}"),
            }
        }
    }
    if let Some((registry, _)) = registry {
        registry.stop().await;
    }
    let _ = stop_api.send(true);
    let _ = api.await;
    let _ = availability.await;
    if let Some(ready) = &opts.ready_file {
        let _ = std::fs::remove_file(ready);
    }
    Ok(())
}
