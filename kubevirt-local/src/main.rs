//! `kubevirt-local`: the local control plane's binary.

use clap::{Parser, Subcommand};
use kubevirt_controller::logging::{self, LogFormat};
use kubevirt_controller::node::{default_launcher, host_name, plain_http_args};
use kubevirt_kubelet::images::served::ServedImage;
use kubevirt_local::server::{self, State, inflight};
use kubevirt_local::setup;
use kubevirt_local::storage::Store;
use kubevirt_local::up::{self, KubeletOptions, NodeOptions, RegistryOptions, Started, UpOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: kubevirt_local::allocator::Allocator = kubevirt_local::allocator::Allocator;

/// The kubevirt-rs local control plane.
#[derive(Debug, Parser)]
#[command(name = "kubevirt-local", version, about)]
struct Cli {
    /// How `up` and `apiserver` write their logs on stderr; `RUST_LOG` filters them.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole local system: the API server, the KubeVirt CRDs, the controllers, the
    /// kubelet and the node agent that boots VMIs on this machine with kubevirt-launcher, each
    /// in its virt-launcher pod (root and /dev/kvm). Stops on SIGINT or SIGTERM; the pods and
    /// their VMs keep running unless --stop-pods-on-exit (direct launchers are stopped).
    Up(Box<UpArgs>),
    /// Serve the Kubernetes API on loopback, storing everything in DATA_DIR/state.db.
    Apiserver {
        /// Where the database, certificates, token and kubeconfig live.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Serve plain HTTP without authentication (loopback debugging only).
        #[arg(long)]
        insecure_http: bool,
        /// How many changes the watch history keeps; older resourceVersions get 410 Expired.
        #[arg(long, default_value_t = kubevirt_local::storage::DEFAULT_HISTORY)]
        watch_history: u64,
        #[command(flatten)]
        inflight: InflightFlags,
    },
    /// Print on stdout a kubeconfig for user NAME (in each --group) against the server of
    /// DATA_DIR: a token the server signed, carrying the name and groups, that stays valid
    /// across restarts until it expires or the data directory's token is replaced (with
    /// --client-certificate: a client certificate of the data directory's client CA instead). What NAME
    /// may do is what RBAC grants it (`--group system:masters` is an administrator).
    Kubeconfig {
        /// The data directory of `up` or `apiserver`.
        #[arg(long)]
        data_dir: PathBuf,
        /// The user name.
        #[arg(long)]
        user: String,
        /// A group of the user; repeatable (every user is also in system:authenticated).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the credential is valid, in seconds (default: one year).
        #[arg(long, default_value_t = 365 * 24 * 3600)]
        expiration_seconds: i64,
        /// A client certificate (client-certificate-data, client-key-data) the data
        /// directory's client CA issues, CN NAME and an O per group, instead of a token.
        #[arg(long)]
        client_certificate: bool,
    },
    /// Write the release images of the components (virt-operator, virt-api, virt-controller,
    /// virt-handler, virt-launcher, cdi-importer, local-volume-provisioner) as OCI image
    /// layouts OUTPUT_DIR/NAME, built from the binaries in BINARIES and the host's tools, and
    /// print `NAME:TAG DIGEST` for each. The same inputs give the same digests.
    /// `scripts/images.sh` pushes them to a registry.
    Images {
        /// The directory holding kubevirt-controller and kubevirt-launcher.
        #[arg(long, default_value = "target/release")]
        binaries: PathBuf,
        /// The images' tag.
        #[arg(long)]
        tag: String,
        /// Where the layouts are written (one directory per image).
        #[arg(long)]
        output_dir: PathBuf,
    },
}

/// `up`'s flags.
#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Where the database, certificates, token, kubeconfig and the VMs' files live.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// How many changes the watch history keeps; older resourceVersions get 410 Expired.
    #[arg(long, default_value_t = kubevirt_local::storage::DEFAULT_HISTORY)]
    watch_history: u64,
    /// No node agent: VMIs are created but nothing runs them.
    #[arg(long)]
    no_node: bool,
    /// The API server and the node only (kubelet, scheduler, workload controllers, the node's
    /// registry, local volumes, the snapshot API) without KubeVirt's components: no KubeVirt
    /// or CDI CRDs, controllers, node agent or subresource API. `kubectl create -f
    /// kubevirt-operator.yaml` and `-f kubevirt-cr.yaml` then install them as pods.
    #[arg(long, conflicts_with_all = ["direct_launchers", "launcher_image"])]
    bare: bool,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The kubevirt-launcher binary the node agent runs and the launcher image is built from
    /// (default: next to this binary, else on PATH).
    #[arg(long, visible_alias = "launcher-binary")]
    launcher: Option<PathBuf>,
    /// A registry (`host:port`) the launchers use over plain HTTP; repeatable.
    #[arg(long = "plain-http-registry")]
    plain_http: Vec<String>,
    /// Run each VMI's launcher as the node agent's child instead of in its virt-launcher pod
    /// (what happens anyway with --no-kubelet).
    #[arg(long)]
    direct_launchers: bool,
    /// The image of the VMIs' virt-launcher pods (default: the one the node's registry builds
    /// from --launcher).
    #[arg(long, value_name = "IMAGE")]
    launcher_image: Option<String>,
    /// No kubelet: pods are stored but nothing runs them.
    #[arg(long)]
    no_kubelet: bool,
    /// Use the containerd (CRI) already answering on this socket instead of starting one
    /// under DATA_DIR/node/containerd.
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// The containerd binary for the private containerd.
    #[arg(long, default_value = "containerd")]
    containerd: PathBuf,
    /// The OCI runtime the private containerd runs containers with: `crun` (several times
    /// cheaper a container start), `runc`, or `auto` (crun when it is installed and the host's
    /// cgroups suit it, else runc).
    #[arg(long, default_value = "auto", value_name = "auto|runc|crun")]
    oci_runtime: kubevirt_kubelet::containerd::OciRuntimeChoice,
    /// The pods' IPv4 network (the CNI bridge's range).
    #[arg(long, default_value = "10.88.0.0/16")]
    pod_cidr: String,
    /// The host bridge of the pods' network (made at start, removed by a stop that stops the
    /// pods). Two nodes on one host need two bridges and two --pod-cidr ranges.
    #[arg(long, default_value = "kvl0", value_name = "NAME")]
    pod_bridge: String,
    /// The sandbox (pause) image every pod's sandbox runs: an image whose entrypoint waits
    /// forever, pullable from a registry this node reaches (default: the pause image the
    /// node's registry serves, built from the static busybox; with --no-registry
    /// 127.0.0.1:5000/kubevirt-local/pause:1).
    #[arg(long)]
    sandbox_image: Option<String>,
    /// Where the node's registry listens (plain HTTP, read-only; default 127.0.0.1 on the
    /// port the last run used if free, else a free port). It serves the pause image, the
    /// launcher image and every --image, and the private containerd trusts it.
    #[arg(long, value_name = "ADDR")]
    registry_listen: Option<SocketAddr>,
    /// Serve the OCI image layout DIR as NAME:TAG from the node's registry (e.g.
    /// `kubevirt-rs/demo:1=target/demo-image`); repeatable.
    #[arg(long = "image", value_name = "NAME:TAG=DIR", value_parser = parse_image)]
    images: Vec<ServedImage>,
    /// The static busybox the node's pause image is made of (Debian's busybox-static).
    #[arg(long, default_value = "/usr/bin/busybox")]
    busybox: PathBuf,
    /// No node registry: the sandbox image (--sandbox-image) and every pod's image come
    /// from registries elsewhere.
    #[arg(long)]
    no_registry: bool,
    /// Stop the pods (and the private containerd) when `up` stops; by default they keep
    /// running and the next `up` adopts them.
    #[arg(long)]
    stop_pods_on_exit: bool,
    /// Once the whole plane is ready, write `{"address", "url", "kubeconfig", "dataDir",
    /// "pid", "registry", "launcherImage", "sandboxImage", "images", "vmiLaunchers"}` here
    /// (atomically).
    /// The same JSON is printed as one line on stdout.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    inflight: InflightFlags,
}

/// The API server's caps on requests in flight (long-running ones, watches and streams, are
/// not counted); over a cap a request gets 429 and `Retry-After: 1`. Administrators
/// (`system:masters`, which `up`'s own components are) are never refused.
#[derive(Debug, clap::Args)]
struct InflightFlags {
    /// Most get and list requests in flight at once (kube-apiserver's default).
    #[arg(long, value_name = "N", value_parser = parse_cap,
        default_value_t = inflight::DEFAULT_READ_ONLY)]
    max_requests_inflight: usize,
    /// Most other (mutating) requests in flight at once (kube-apiserver's default).
    #[arg(long, value_name = "N", value_parser = parse_cap,
        default_value_t = inflight::DEFAULT_MUTATING)]
    max_mutating_requests_inflight: usize,
    /// The share of each of the two caps one user may hold, in percent (rounded up).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent,
        default_value_t = inflight::DEFAULT_PER_USER_PERCENT)]
    max_requests_inflight_per_user_percent: usize,
}

impl InflightFlags {
    fn limits(&self) -> Result<inflight::Limits, inflight::LimitsError> {
        inflight::Limits::new(
            self.max_requests_inflight,
            self.max_mutating_requests_inflight,
            self.max_requests_inflight_per_user_percent,
        )
    }
}

fn parse_cap(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (a cap of 0 would refuse every request)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number of requests: {e}")),
    }
}

fn parse_percent(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ 1..=100) => Ok(n),
        Ok(n) => Err(format!("a percentage of each cap: 1 to 100, not {n}")),
        Err(e) => Err(format!("not a whole percentage: {e}")),
    }
}

fn parse_image(spec: &str) -> Result<ServedImage, String> {
    ServedImage::parse(spec).map_err(|e| e.to_string())
}

/// The installed launcher the launcher image is built from: next to this binary, else on PATH;
/// `None` (with a warning) when there is none.
fn installed_launcher() -> Option<PathBuf> {
    let next_to_us = default_launcher();
    let found = if next_to_us.is_absolute() {
        Some(next_to_us)
    } else {
        kubevirt_kubelet::programs::on_path("kubevirt-launcher")
    };
    if found.is_none() {
        eprintln!(
            "warning: no kubevirt-launcher next to this binary or on PATH: the node's registry serves no launcher image (--launcher names one)"
        );
    }
    found
}

/// The installed `kubevirt-controller` (next to this binary) and `qemu-img` (Debian's
/// qemu-utils) the CDI importer image is built from; `None` (with a warning) when either is
/// missing: DataVolumes then stay unfilled.
fn installed_importer() -> Option<(PathBuf, PathBuf)> {
    let controller = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("kubevirt-controller")))
        .filter(|p| p.is_file());
    let qemu_img = PathBuf::from(kubevirt_kubelet::images::node::QEMU_IMG_PATH);
    match controller {
        Some(c) if qemu_img.is_file() => Some((c, qemu_img)),
        Some(_) => {
            eprintln!(
                "warning: no {} (Debian's qemu-utils): the node's registry serves no CDI importer image and DataVolumes are not filled",
                qemu_img.display()
            );
            None
        }
        None => {
            eprintln!(
                "warning: no kubevirt-controller next to this binary: the node's registry serves no CDI importer image and DataVolumes are not filled"
            );
            None
        }
    }
}

/// `kubevirt-local images`.
fn write_images(binaries: &std::path::Path, tag: &str, output_dir: &std::path::Path) -> ExitCode {
    use kubevirt_kubelet::images::components::{ComponentBinaries, component_images};
    if !kubevirt_kubelet::images::served::valid_tag(tag) {
        eprintln!(
            "error: --tag {tag:?} is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
        );
        return ExitCode::FAILURE;
    }
    let images = match component_images(&ComponentBinaries::in_dir(binaries), tag) {
        Ok(images) => images,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for image in images {
        let name = image.reference();
        let dir = output_dir.join(name.split(':').next().unwrap_or(&name));
        match image.write_layout(&dir) {
            Ok(built) => {
                let _ = writeln!(out, "{name} {}", built.digest);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    kubevirt_local::allocator::configure();
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let command = cli.command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (data_dir, listen, insecure_http, watch_history, inflight) = match command {
        Command::Kubeconfig {
            data_dir,
            user,
            groups,
            expiration_seconds,
            client_certificate,
        } => {
            let credential = if client_certificate {
                setup::Credential::ClientCertificate
            } else {
                setup::Credential::Token
            };
            return match setup::user_kubeconfig(
                &data_dir,
                &user,
                &groups,
                expiration_seconds,
                credential,
            ) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Images {
            binaries,
            tag,
            output_dir,
        } => return write_images(&binaries, &tag, &output_dir),
        Command::Apiserver {
            data_dir,
            listen,
            insecure_http,
            watch_history,
            inflight,
        } => (data_dir, listen, insecure_http, watch_history, inflight),
        Command::Up(args) => {
            let UpArgs {
                data_dir,
                listen,
                watch_history,
                no_node,
                bare,
                node_name,
                launcher,
                plain_http,
                direct_launchers,
                launcher_image,
                ready_file,
                no_kubelet,
                containerd_socket,
                containerd,
                oci_runtime,
                pod_cidr,
                pod_bridge,
                sandbox_image,
                registry_listen,
                images,
                busybox,
                no_registry,
                stop_pods_on_exit,
                inflight,
            } = *args;
            let inflight = match inflight.limits() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let registry = (!no_registry).then(|| RegistryOptions {
                listen: registry_listen,
                busybox,
                launcher: launcher.clone().or_else(installed_launcher),
                importer: installed_importer(),
                images,
                keep_sandbox_image: sandbox_image.is_some(),
            });
            let node_name =
                node_name.unwrap_or_else(|| host_name().unwrap_or_else(|_| "local".into()));
            let kubelet = (!no_kubelet).then(|| KubeletOptions {
                node_name: node_name.clone(),
                runtime: match containerd_socket {
                    Some(socket) => kubevirt_kubelet::Runtime::Existing(socket),
                    None => kubevirt_kubelet::Runtime::Private {
                        binary: containerd,
                        config: kubevirt_kubelet::containerd::ContainerdConfig {
                            sandbox_image: sandbox_image.unwrap_or_else(|| {
                                kubevirt_kubelet::containerd::ContainerdConfig::default()
                                    .sandbox_image
                            }),
                            pod_cidr,
                            bridge: pod_bridge,
                            plain_http_registries: plain_http.clone(),
                            oci_runtime,
                            ..Default::default()
                        },
                    },
                },
                stop_pods_on_exit,
                registry,
            });
            let mut launcher_args = plain_http_args(&plain_http);
            let mut registry_config_dir = None;
            if matches!(
                kubelet.as_ref().map(|k| &k.runtime),
                Some(kubevirt_kubelet::Runtime::Private { .. })
            ) {
                // One registry configuration for pods and VMs: the private containerd's
                // hosts directory (`<registry>/hosts.toml`, mirrors included) is also where
                // the launchers look for containerDisk and kernel image mirrors.
                let hosts = std::path::absolute(&data_dir)
                    .unwrap_or_else(|_| data_dir.clone())
                    .join("node/containerd")
                    .join(kubevirt_kubelet::containerd::HOSTS_DIR);
                launcher_args.push("--registry-config-dir".into());
                launcher_args.push(hosts.display().to_string());
                registry_config_dir = Some(hosts);
            }
            let node = (!no_node && !bare).then(|| NodeOptions {
                node_name,
                launcher: launcher.unwrap_or_else(default_launcher),
                launcher_args,
                plain_http,
                registry_config_dir,
                launcher_image,
                direct_launchers,
            });
            let opts = UpOptions {
                data_dir,
                listen,
                watch_history,
                node,
                ready_file,
                kubelet,
                inflight,
            };
            let (components, what, next) = if bare {
                (
                    up::Components::Bare,
                    "the node, no KubeVirt components",
                    "kubectl create -f kubevirt-operator.yaml && kubectl create -f kubevirt-cr.yaml",
                )
            } else if no_node {
                (
                    up::Components::KubeVirt,
                    "controllers",
                    "kubectl apply -f examples/vm-demo.yaml",
                )
            } else {
                (
                    up::Components::KubeVirt,
                    "controllers, node agent",
                    "kubectl apply -f examples/vm-demo.yaml",
                )
            };
            let started = |s: &Started| {
                // One line each, errors ignored: whoever reads our output may stop reading.
                let _ = writeln!(std::io::stdout(), "{}", s.to_json());
                let _ = std::io::stdout().flush();
                let _ = write!(
                    std::io::stderr(),
                    "kubevirt-local up: ready: API server on {}, {what}\n  export KUBECONFIG={}\n  {next}\n",
                    s.url,
                    s.kubeconfig.display()
                );
            };
            return match runtime.block_on(up::run_with(
                opts,
                components,
                kubevirt_controller::signal::terminated(),
                started,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    if insecure_http && !listen.ip().is_loopback() {
        eprintln!("error: --insecure-http is only allowed on a loopback address, not {listen}");
        return ExitCode::from(2);
    }
    let inflight = match inflight.limits() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(
        data_dir,
        listen,
        insecure_http,
        watch_history,
        inflight,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    dir: PathBuf,
    listen: SocketAddr,
    insecure: bool,
    history: u64,
    inflight: inflight::Limits,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let store = Store::open(&dir.join("state.db"))?.with_history(history);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let (scheme, tls, token) = if insecure {
        ("http", None, None)
    } else {
        let tls = setup::tls(&dir)?;
        ("https", Some(tls), Some(setup::token(&dir)?))
    };
    let url = format!("{scheme}://{addr}");
    let kubeconfig = setup::kubeconfig(
        &dir,
        &url,
        tls.as_ref().map(|t| t.ca_pem.as_str()),
        token.as_deref(),
    )?;
    let state = State::new(store, token, addr.to_string())?;
    state.inflight.set_limits(inflight);
    if let Some(t) = &tls {
        let _ = state.client_certs.set(t.client_auth.clone());
    }
    server::aggregator::enable(&state, &dir, tls.as_ref().map(|t| t.client_ca_pem.as_str()))?;
    tokio::spawn(server::aggregator::availability::run(
        state.clone(),
        std::future::pending(),
    ));
    println!("kubevirt-local API server listening on {url}");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get namespaces");
    server::serve(
        listener,
        state,
        tls.map(|t| t.config),
        kubevirt_controller::signal::terminated(),
    )
    .await?;
    Ok(())
}
