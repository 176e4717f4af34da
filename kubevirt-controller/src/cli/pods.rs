//! The flags that put VMIs in virt-launcher pods: `run --vmi-pods ...` starts the VMI
//! controller with its [`PodConfig`]; `node --mode pods ...` runs the node agent in
//! [`AgentMode::Pods`]. The two go together (docs/DEPLOY.md).

use std::path::PathBuf;

use clap::ValueEnum;

use super::CliError;
use crate::node::AgentMode;
use crate::vmi::PodConfig;

/// The launcher root on a real node: the node agent's DaemonSet and every virt-launcher pod
/// mount it.
pub const DEFAULT_LAUNCHER_ROOT: &str = "/var/run/kubevirt-rs/launchers";
/// The launchers' image cache on a real node.
pub const DEFAULT_IMAGE_CACHE: &str = "/var/cache/kubevirt-rs/images";

/// `run`: the VMI controller and the pods it renders.
#[derive(Debug, clap::Args)]
pub struct VmiPodArgs {
    /// Also run the VirtualMachineInstance controller: every VMI gets a virt-launcher pod
    /// (needs --launcher-image, and node agents started with `node --mode pods`).
    #[arg(long, requires = "launcher_image")]
    pub vmi_pods: bool,
    /// The launcher image the pods run (`compute` and `guest-console-log`).
    #[arg(long, value_name = "IMAGE")]
    pub launcher_image: Option<String>,
    /// The launcher root on the nodes: a VMI's run directory is `<DIR>/<uid>`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LAUNCHER_ROOT)]
    pub launcher_root: PathBuf,
    /// The launchers' image cache on the nodes.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_IMAGE_CACHE)]
    pub image_cache: PathBuf,
    /// containerd's registry host configuration (`certs.d`) on the nodes, mounted read-only
    /// into the pods.
    #[arg(long, value_name = "DIR")]
    pub registry_config_dir: Option<PathBuf>,
    /// A registry (`host:port`) the launchers in the pods use over plain HTTP; repeatable.
    #[arg(long = "plain-http-registry", value_name = "HOST:PORT")]
    pub plain_http: Vec<String>,
    /// What relative `oci:PATH` image references are relative to (default: the current
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub oci_working_dir: Option<PathBuf>,
    /// Let a live migration's target pod run on its source's node (a single-node cluster);
    /// by default it must land on another node, as upstream's.
    #[arg(long, requires = "vmi_pods")]
    pub migrate_within_node: bool,
}

impl VmiPodArgs {
    /// The VMI controller's configuration, if `--vmi-pods` was given.
    pub fn config(&self) -> Result<Option<PodConfig>, CliError> {
        if !self.vmi_pods {
            return Ok(None);
        }
        let Some(image) = self.launcher_image.clone() else {
            return Err(CliError::Setup("--vmi-pods needs --launcher-image".into()));
        };
        Ok(Some(PodConfig {
            launcher_image: image,
            launcher_root: self.launcher_root.clone(),
            image_cache: self.image_cache.clone(),
            registry_config_dir: self.registry_config_dir.clone(),
            plain_http_registries: self.plain_http.clone(),
            working_dir: working_dir(self.oci_working_dir.as_ref())?,
        }))
    }
}

/// `node --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ModeArg {
    /// The agent spawns every launcher itself (no VMI controller, no pods).
    #[default]
    Direct,
    /// Every VMI runs in its virt-launcher pod; the agent attaches to the launchers below
    /// --launcher-root.
    Pods,
}

/// `node`: how the agent gets its launchers.
#[derive(Debug, clap::Args)]
pub struct AgentModeArgs {
    /// direct: spawn launchers; pods: find them in the VMIs' virt-launcher pods.
    #[arg(long, value_enum, default_value_t = ModeArg::Direct)]
    pub mode: ModeArg,
    /// With --mode pods: the launcher root (`<DIR>/<uid>/control.sock`), as the VMI controller's.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_LAUNCHER_ROOT)]
    pub launcher_root: PathBuf,
    /// With --mode pods: what relative `oci:PATH` references are relative to, as the VMI
    /// controller's --oci-working-dir (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub oci_working_dir: Option<PathBuf>,
}

impl AgentModeArgs {
    /// The mode, and the run root it implies (`direct_run_root` in direct mode, the launcher
    /// root in pods mode).
    pub fn mode(&self, direct_run_root: PathBuf) -> Result<(AgentMode, PathBuf), CliError> {
        Ok(match self.mode {
            ModeArg::Direct => (AgentMode::Direct, direct_run_root),
            ModeArg::Pods => (
                AgentMode::Pods {
                    working_dir: working_dir(self.oci_working_dir.as_ref())?,
                },
                self.launcher_root.clone(),
            ),
        })
    }
}

fn working_dir(given: Option<&PathBuf>) -> Result<PathBuf, CliError> {
    match given {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir()
            .map_err(|e| CliError::Setup(format!("reading the current directory: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubevirt-controller").chain(args.iter().copied()))
    }

    #[test]
    fn run_starts_the_vmi_controller_only_with_vmi_pods_and_an_image() {
        let Command::Run { pods, .. } = parse(&["run"]).unwrap().command else {
            panic!("run")
        };
        assert_eq!(pods.config().unwrap(), None);
        assert!(parse(&["run", "--vmi-pods"]).is_err(), "no launcher image");
        let cli = parse(&[
            "run",
            "--vmi-pods",
            "--launcher-image",
            "reg:5000/launcher:v1",
            "--registry-config-dir",
            "/etc/containerd/certs.d",
            "--plain-http-registry",
            "reg:5000",
            "--oci-working-dir",
            "/srv",
        ])
        .unwrap();
        let Command::Run { pods, .. } = cli.command else {
            panic!("run")
        };
        let config = pods.config().unwrap().expect("a pod config");
        assert_eq!(
            config,
            PodConfig {
                launcher_image: "reg:5000/launcher:v1".into(),
                launcher_root: DEFAULT_LAUNCHER_ROOT.into(),
                image_cache: DEFAULT_IMAGE_CACHE.into(),
                registry_config_dir: Some("/etc/containerd/certs.d".into()),
                plain_http_registries: vec!["reg:5000".into()],
                working_dir: "/srv".into(),
            }
        );
    }

    #[test]
    fn node_in_pods_mode_runs_below_the_launcher_root() {
        let Command::Node(args) = parse(&["node"]).unwrap().command else {
            panic!("node")
        };
        let (mode, root) = args.mode.mode(args.run_root.clone()).unwrap();
        assert_eq!((mode, root), (AgentMode::Direct, args.run_root));
        let cli = parse(&["node", "--mode", "pods", "--oci-working-dir", "/srv"]).unwrap();
        let Command::Node(args) = cli.command else {
            panic!("node")
        };
        let (mode, root) = args.mode.mode(args.run_root.clone()).unwrap();
        let working_dir = PathBuf::from("/srv");
        assert_eq!(mode, AgentMode::Pods { working_dir });
        assert_eq!(root, PathBuf::from(DEFAULT_LAUNCHER_ROOT));
    }
}
