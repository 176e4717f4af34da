//! The kubelet as one unit: start the runtime (or connect to one), register the node, heartbeat,
//! run the pods; stop leaving the pods running (or stopping them, if asked).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::containerd::{ConfigError, ContainerdConfig, Layout, SuperviseError, Supervisor};
use crate::cri::{Cri, CriError};
use crate::node::{self, NodeError, NodeInfo};
use crate::pod::{self, Context};

/// How many times a stop that takes the pods down tries to remove their cgroups, and how often.
const CGROUP_RETRIES: u32 = 25;
const CGROUP_RETRY_EVERY: Duration = Duration::from_millis(200);

/// How often the node's status and lease are renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Which containerd the kubelet uses.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// Its own, under `<data dir>/containerd`, started (and restarted) by the kubelet.
    Private {
        /// The containerd binary.
        binary: PathBuf,
        /// Its configuration.
        config: ContainerdConfig,
    },
    /// One already running, reached on this CRI socket (configured by whoever runs it).
    Existing(PathBuf),
}

/// What the kubelet runs with.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The node's name.
    pub node_name: String,
    /// The kubelet's directory: `containerd/` (private runtime), `pods/<uid>/volumes/`,
    /// `logs/<ns>_<pod>_<uid>/<container>/<attempt>.log`.
    pub data_dir: PathBuf,
    /// The runtime.
    pub runtime: Runtime,
    /// The port of the kubelet's endpoint (`/containerLogs/...`) on 127.0.0.1, published as
    /// `daemonEndpoints.kubeletEndpoint` (0: any free port).
    pub kubelet_port: u16,
    /// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`/`PORT` in every container);
    /// `None`: pods get no such variables.
    pub api_for_pods: Option<std::net::SocketAddr>,
}

/// Errors starting the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// containerd's files could not be written.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// containerd could not be started.
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
    /// The runtime did not answer.
    #[error(transparent)]
    Cri(#[from] CriError),
    /// The node could not be registered.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The kubelet's endpoint could not listen.
    #[error("listening on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pod bridge could not be made.
    #[error("making the pod bridge: {0}")]
    Bridge(String),
    /// A directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The address this host is reached at from its pods: the source address of the default route
/// (no packet is sent), else loopback.
pub fn host_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("10.255.255.254:9")?;
        Ok(s.local_addr()?.ip())
    };
    probe().unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// A running kubelet.
#[derive(Debug)]
pub struct Kubelet {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    supervisor: Option<Supervisor>,
    /// The bridge of the private runtime's CNI network (none for an existing runtime).
    bridge: Option<String>,
    ctx: Arc<Context>,
    socket: PathBuf,
}

impl Kubelet {
    /// Starts the runtime, registers the node and starts the heartbeat and the pods' workers.
    pub async fn start(client: kube::Client, cfg: KubeletConfig) -> Result<Self, KubeletError> {
        let mkdir = |p: PathBuf| {
            std::fs::create_dir_all(&p)
                .map_err(|source| KubeletError::Io {
                    path: p.clone(),
                    source,
                })
                .map(|_| p)
        };
        let pods_dir = mkdir(cfg.data_dir.join("pods"))?;
        let logs_dir = mkdir(cfg.data_dir.join("logs"))?;
        let (supervisor, socket) = match &cfg.runtime {
            Runtime::Private { binary, config } => {
                let layout = Layout::new(cfg.data_dir.join("containerd"));
                let runtime = config.write(&layout)?;
                tracing::info!(
                    runtime = runtime.name,
                    "the private containerd's OCI runtime"
                );
                if let Some((gateway, len)) = config.gateway() {
                    crate::containerd::bridge::ensure_bridge(&config.bridge, gateway, len)
                        .map_err(KubeletError::Bridge)?;
                    crate::containerd::masquerade::ensure_masquerade(
                        &config.bridge,
                        &config.pod_cidr,
                    )
                    .map_err(KubeletError::Bridge)?;
                }
                let s = Supervisor::start(layout, binary.clone()).await?;
                let socket = s.socket();
                (Some(s), socket)
            }
            Runtime::Existing(socket) => (None, socket.clone()),
        };
        let cri = Cri::connect(&socket).await?;
        let runtime_version = wait_for_runtime(&cri).await?;
        let node_uid = node::register(&client, &cfg.node_name).await?;
        let (stop, stopped) = watch::channel(false);
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], cfg.kubelet_port));
        let (served, server_task) =
            crate::server::serve(listen, logs_dir.clone(), cri.clone(), stopped.clone())
                .await
                .map_err(|source| KubeletError::Listen {
                    address: listen,
                    source,
                })?;
        let info = NodeInfo {
            name: cfg.node_name.clone(),
            internal_ip: host_ip(),
            runtime_version,
            kubelet_port: served.port(),
            data_dir: cfg.data_dir.clone(),
            started: jiff::Timestamp::now().to_string(),
        };
        node::report_status(&client, &info).await?;
        node::renew_lease(&client, &cfg.node_name, &node_uid).await?;
        let mut tasks = vec![server_task];
        let (c, mut rx) = (client.clone(), stopped.clone());
        let hb_info = info.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = async { let _ = rx.wait_for(|s| *s).await; } => return,
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                }
                if let Err(e) = node::report_status(&c, &hb_info).await {
                    tracing::warn!(error = %e, "node heartbeat");
                }
                if let Err(e) = node::renew_lease(&c, &hb_info.name, &node_uid).await {
                    tracing::warn!(error = %e, "node lease");
                }
            }
        }));
        let ctx = Arc::new(Context {
            client,
            cri: cri.clone(),
            host_ip: info.internal_ip.to_string(),
            node_name: cfg.node_name.clone(),
            pods_dir,
            logs_dir,
            api_for_pods: cfg.api_for_pods,
            starts: tokio::sync::Semaphore::new(pod::start_slots()),
        });
        tasks.push(tokio::spawn(pod::run_pods(
            ctx.clone(),
            cfg.node_name.clone(),
            stopped,
        )));
        tracing::info!(node = %cfg.node_name, socket = %socket.display(), "kubelet started");
        Ok(Self {
            stop,
            tasks,
            supervisor,
            bridge: match &cfg.runtime {
                Runtime::Private { config, .. } => Some(config.bridge.clone()),
                Runtime::Existing(_) => None,
            },
            ctx,
            socket,
        })
    }

    /// The CRI socket in use.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Stops the kubelet. Pods keep running (a later start adopts them) unless `stop_pods`: then
    /// every pod's containers get their grace period, the sandboxes are removed and a private
    /// containerd stops too, and its pod bridge is removed.
    pub async fn stop(self, stop_pods: bool) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if stop_pods {
            pod::stop_all(&self.ctx).await;
        }
        if let Some(s) = self.supervisor {
            s.stop(stop_pods).await;
        }
        if stop_pods {
            // A process ended with its shim (the runtime's stop kills what is left) leaves its
            // cgroup a moment after it dies (the chaos suite found one kept): try again briefly.
            for _ in 0..CGROUP_RETRIES {
                if pod::remove_all_pod_cgroups(&self.ctx.node_name) {
                    break;
                }
                tokio::time::sleep(CGROUP_RETRY_EVERY).await;
            }
        }
        if stop_pods && let Some(bridge) = &self.bridge {
            crate::containerd::remove_bridge(bridge);
            crate::containerd::masquerade::remove_masquerade(bridge);
        }
    }
}

/// How long a starting kubelet waits for the runtime's CRI service to answer.
const RUNTIME_WAIT: Duration = Duration::from_secs(60);

/// The runtime's version once its CRI service answers. containerd listens before its CRI plugin
/// is initialised ("server is not initialized yet"), for seconds on a busy host, both when the
/// kubelet has just started it and when it adopts one that is still starting: the kubelet
/// waits for it as kubelet waits for its runtime, and gives up with the last error.
async fn wait_for_runtime(cri: &Cri) -> Result<String, KubeletError> {
    let deadline = tokio::time::Instant::now() + RUNTIME_WAIT;
    let mut said = false;
    loop {
        match cri.runtime_version().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                if !said {
                    tracing::info!(error = %e, "waiting for the container runtime");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
