//! Command-line interface of the `kubevirt-controller` binary.

mod api;
mod controllers;
mod crds;
mod metrics;
mod operator;
pub mod pods;
mod provisioner;
mod validate;

pub use metrics::MetricsArgs;
pub use provisioner::ProvisionerArgs;

use crate::logging::LogFormat;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use thiserror::Error;

/// The frame of every long-running command: a multi-threaded runtime, a client for the
/// cluster `kubeconfig` names (else `KUBECONFIG`, `~/.kube/config`, in-cluster) and the
/// server's address for the start-up line, then `work` until it ends.
fn on_cluster<F, Fut>(kubeconfig: Option<PathBuf>, work: F) -> Result<ExitCode, CliError>
where
    F: FnOnce(kube::Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, CliError>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (client, server) = crate::controllers::connect(kubeconfig.as_deref()).await?;
        work(client, server).await
    })
}

/// KubeVirt controllers and tools.
#[derive(Debug, Parser)]
#[command(name = "kubevirt-controller", version, about)]
pub struct Cli {
    /// How the long-running commands (`run`, `node`, `provisioner`, `api`, `operator`) write their logs on
    /// stderr; `RUST_LOG` filters them.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every CustomResourceDefinition as one multi-document YAML, ready for `kubectl apply -f -`.
    Crds {
        /// Keep field descriptions (for `kubectl explain`); the result is too large for a client-side
        /// `kubectl apply`, use `kubectl apply --server-side` or `kubectl create`.
        #[arg(long)]
        descriptions: bool,
    },
    /// Write the install manifests, shaped like upstream's release artifacts:
    /// `kubevirt-operator.yaml` (namespace, the KubeVirt CRD, the operator's RBAC and
    /// Deployment) and `kubevirt-cr.yaml` (the KubeVirt CR); then `kubectl create -f` each.
    Manifests {
        /// The registry holding the images (`scripts/images.sh REGISTRY TAG` pushes them).
        #[arg(long)]
        registry: String,
        /// The images' tag.
        #[arg(long)]
        tag: String,
        /// The image pull policy of the operator and the components.
        #[arg(long, default_value = "IfNotPresent")]
        image_pull_policy: String,
        /// Where the two files are written.
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
    },
    /// Parse, default and validate every document in the files, as upstream's webhooks would.
    ///
    /// Prints `FILE[doc N] PATH: message` for each problem and exits 1 if there is any.
    Validate {
        /// Files to check (`-` for standard input).
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Print the defaulted, typed round-trip of every valid document.
        #[arg(short = 'o', long = "output")]
        output: Option<Output>,
    },
    /// Run the controllers (VirtualMachine, VirtualMachineInstanceReplicaSet, and with
    /// `--vmi-pods` VirtualMachineInstance) against the cluster that `KUBECONFIG` (or
    /// `--kubeconfig`, or the in-cluster service account) names, until SIGINT or SIGTERM.
    Run {
        /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Install or update the CRDs first (and wait until they are served).
        #[arg(long)]
        install_crds: bool,
        /// The VMI controller and its pods.
        #[command(flatten)]
        pods: pods::VmiPodArgs,
        /// Also run the DataVolume controller (CDI's), whose importer and upload server pods
        /// run this image (`kubevirt-controller` with qemu-img; docs/STORAGE.md).
        #[arg(long, value_name = "IMAGE")]
        importer_image: Option<String>,
        /// `/metrics` (upstream's virt-controller names).
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Run the node agent: a `kubevirt-launcher` for every VMI on this node (spawned, or with
    /// `--mode pods` in the VMI's virt-launcher pod), its state written back on the VMI;
    /// deleting a VMI shuts its guest down first.
    Node(NodeArgs),
    /// Run this node's local-volume provisioner and resizer (`kubevirt-rs.io/local-volume`):
    /// claims whose selected node is this one get a directory or a loop device under `--root`
    /// and a PV; Released PVs with reclaim policy Delete are removed; grown claims grow.
    Provisioner(ProvisionerArgs),
    /// Serve the subresource API (`subresources.kubevirt.io`: start, stop, console, ...) over
    /// TLS for the cluster's APIService, authenticating callers through the cluster.
    Api(api::ApiArgs),
    /// Run the KubeVirt operator (upstream's virt-operator): the replica holding Lease
    /// `virt-operator` installs, keeps, reports on and removes the components the `KubeVirt` CR
    /// of `WATCH_NAMESPACE` asks for, with images `REGISTRY/NAME:TAG` of `VIRT_OPERATOR_IMAGE`
    /// (`REGISTRY/virt-operator:TAG`) unless the CR names others.
    Operator(operator::OperatorArgs),
    /// Import a DataVolume's data into its claim, as CDI's importer pod: the source from
    /// upstream's environment (`IMPORTER_SOURCE`, `IMPORTER_ENDPOINT`, ...), the claim at
    /// --data-dir or --block-device, the result in the termination message.
    CdiImporter(crate::cdi::import::cli::ImporterArgs),
    /// Receive a DataVolume's upload into its claim, as CDI's upload server pod: one upload
    /// (`POST /v1beta1/upload`) through the importer's pipeline, the result in the termination
    /// message.
    CdiUploadserver(crate::cdi::upload::cli::UploadServerArgs),
    /// Serve the one disk file of a registry image under /disk on localhost, as CDI's
    /// `cdi-containerimage-server` in a `pullMethod: node` importer pod; `--install-to DIR`
    /// copies this binary with its loader and libraries into DIR instead (the init container).
    CdiContainerimageServer(crate::cdi::import::node_pull::server::ServerArgs),
}

/// Arguments of `kubevirt-controller node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The `kubevirt-launcher` binary (default: next to this binary, else on PATH).
    #[arg(long)]
    pub launcher: Option<PathBuf>,
    /// Per-VMI run directories go below this.
    #[arg(long, default_value = "/var/run/kubevirt-rs/vmis")]
    pub run_root: PathBuf,
    /// The launchers' image cache.
    #[arg(long, default_value = "/var/cache/kubevirt-rs/images")]
    pub cache_dir: PathBuf,
    /// Where claims are prepared (`<dir>/<volume>/disk.img`).
    #[arg(long, default_value = "/var/run/kubevirt-rs/volumes")]
    pub volumes_dir: PathBuf,
    /// A registry (`host:port`) the launchers use over plain HTTP; repeatable.
    #[arg(long = "plain-http-registry")]
    pub plain_http: Vec<String>,
    /// Run only VMIs already placed on this node (a real cluster's scheduler places them);
    /// by default the agent also takes VMIs no node has claimed, as the local single-node
    /// control plane needs.
    #[arg(long)]
    pub only_scheduled: bool,
    /// Serve the agent's endpoint (console, pause, ... for the subresource API) here, e.g.
    /// `0.0.0.0:8186`; needs --endpoint-token-file.
    #[arg(long, requires = "endpoint_token_file")]
    pub endpoint_listen: Option<std::net::SocketAddr>,
    /// A file holding the token the endpoint's callers must send.
    #[arg(long)]
    pub endpoint_token_file: Option<PathBuf>,
    /// `/metrics` (upstream's virt-handler names: each VMI's vCPU time, memory, network and
    /// storage counters).
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Serve the endpoint over TLS with this certificate (PEM; for the name the API verifies,
    /// `kubevirt-node-agent` by default) ...
    #[arg(long, requires = "endpoint_tls_key_file")]
    pub endpoint_tls_cert_file: Option<PathBuf>,
    /// ... and this key.
    #[arg(long, requires = "endpoint_tls_cert_file")]
    pub endpoint_tls_key_file: Option<PathBuf>,
    /// The CA (PEM) the other nodes' agents' endpoint certificates chain to: a live
    /// migration's source reaches the target node's agent over TLS (without it: plain TCP).
    /// Live migrations need the endpoint (--endpoint-listen); the agents listen on the same
    /// port of each node's InternalIP.
    #[arg(long)]
    pub endpoint_ca_file: Option<PathBuf>,
    /// The kubelet's device plugin directory: when it exists (a real cluster's node), the
    /// agent serves `devices.kubevirt.io/kvm`, `/tun` and `/vhost-net` there and registers them
    /// with the kubelet, as upstream's virt-handler does, so launcher pods get the devices
    /// without `privileged`.
    #[arg(long, default_value = crate::node::deviceplugin::DEFAULT_DIR)]
    pub device_plugin_dir: PathBuf,
    /// Serve no device plugins.
    #[arg(long)]
    pub no_device_plugins: bool,
    /// How many devices each plugin advertises (launcher pods per node).
    #[arg(long, default_value_t = crate::node::deviceplugin::DEFAULT_COUNT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub max_devices: usize,
    /// Direct or pods mode.
    #[command(flatten)]
    pub mode: pods::AgentModeArgs,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// YAML documents separated by `---`.
    Yaml,
    /// One JSON document per object.
    Json,
}

/// Errors of the command-line interface.
#[derive(Debug, Error)]
pub enum CliError {
    /// Writing output failed.
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
    /// Rendering output failed.
    #[error("rendering output: {0}")]
    Render(String),
    /// The cluster could not be reached.
    #[error("connecting to the cluster: {0}")]
    Connect(#[from] crate::controllers::ConnectError),
    /// This host's name could not be read.
    #[error("reading the host name (give --node-name): {0}")]
    HostName(#[source] std::io::Error),
    /// The CRDs could not be installed.
    #[error(transparent)]
    Install(#[from] crate::install::InstallError),
    /// A file or setting the command needs is unusable.
    #[error("{0}")]
    Setup(String),
    /// The manifests could not be written.
    #[error(transparent)]
    Manifests(#[from] crate::manifests::ManifestError),
}

/// Run a parsed command line, writing results to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Crds { descriptions } => crds::run(descriptions, out),
        Command::Manifests {
            registry,
            tag,
            image_pull_policy,
            output_dir,
        } => {
            let options = crate::manifests::ManifestOptions {
                registry,
                tag,
                pull_policy: image_pull_policy,
            };
            for path in crate::manifests::write(&options, &output_dir)? {
                writeln!(out, "{}", path.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files, output } => validate::run(&files, output, out),
        Command::Run {
            kubeconfig,
            install_crds,
            pods,
            importer_image,
            metrics,
        } => {
            crate::logging::init(cli.log_format);
            let data_volumes = importer_image.map(crate::cdi::datavolume::DataVolumeConfig::new);
            let options = controllers::RunOptions {
                kubeconfig,
                install_crds,
                migrate_within_node: pods.migrate_within_node,
                pods: pods.config()?,
                data_volumes,
                metrics,
            };
            controllers::run(options, out)
        }
        Command::Node(args) => {
            crate::logging::init(cli.log_format);
            controllers::node(args, out)
        }
        Command::Provisioner(args) => {
            crate::logging::init(cli.log_format);
            provisioner::run(args, out)
        }
        Command::Api(args) => {
            crate::logging::init(cli.log_format);
            api::run(args, out)
        }
        Command::Operator(args) => {
            crate::logging::init(cli.log_format);
            operator::run(args, out)
        }
        Command::CdiImporter(args) => {
            crate::logging::init(cli.log_format);
            Ok(crate::cdi::import::cli::run(&args))
        }
        Command::CdiUploadserver(args) => {
            crate::logging::init(cli.log_format);
            Ok(crate::cdi::upload::cli::run(&args))
        }
        Command::CdiContainerimageServer(args) => {
            crate::logging::init(cli.log_format);
            Ok(crate::cdi::import::node_pull::server::run(&args))
        }
    }
}
