//! `kubevirt-controller provisioner`: one node's local-volume provisioner and resizer against a
//! cluster until a signal (a DaemonSet's pod on each node, privileged for loop devices).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::controllers::Controllers;
use crate::storage::{self, ProvisionerConfig};

/// Arguments of `kubevirt-controller provisioner`.
#[derive(Debug, clap::Args)]
pub struct ProvisionerArgs {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: claims whose selected node it is get a volume here (default: the
    /// host name).
    #[arg(long)]
    pub node: Option<String>,
    /// The storage root: volumes are `<root>/pvc-<claim uid>` (and `.img` for Block).
    #[arg(long, default_value = storage::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Also provision claims of Immediate StorageClasses, which name no node (run one such
    /// instance per cluster, e.g. on a single-node cluster).
    #[arg(long)]
    pub immediate: bool,
}

pub(super) fn run(args: ProvisionerArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let node_name = match args.node {
        Some(n) => n,
        None => crate::node::host_name().map_err(CliError::HostName)?,
    };
    // A root that cannot be made is the operator's to fix: say so now, not in a log line.
    let root =
        storage::disk::prepare_root(&args.root).map_err(|e| CliError::Setup(e.to_string()))?;
    let config = ProvisionerConfig {
        node_name,
        root,
        immediate: args.immediate,
    };
    super::on_cluster(args.kubeconfig.clone(), |client, server| async move {
        writeln!(
            out,
            "kubevirt-controller: local volume provisioner {} of node {} on {server} (root {}{})",
            storage::PROVISIONER,
            config.node_name,
            config.root.display(),
            if config.immediate {
                ", Immediate classes too"
            } else {
                ""
            }
        )?;
        out.flush()?;
        let mut set = Controllers::new(client, crate::logging::sync_outcome);
        set.start_local_provisioner(config);
        set.run_until(crate::signal::terminated()).await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use clap::Parser;
    use serde_json::Value;

    /// The manifest for a real cluster: its command line parses, the root is mounted at the
    /// host's path, the pod can reach loop devices, and its role covers what it does.
    #[test]
    fn the_local_volumes_manifest_matches_the_command() {
        let text = include_str!("../../manifests/local-volumes.yaml");
        let docs: Vec<Value> = text
            .split("\n---\n")
            .map(|d| serde_saphyr::from_str(d).expect("each document parses"))
            .collect();
        let find = |kind: &str| docs.iter().find(|d| d["kind"] == kind).expect(kind);
        let class = find("StorageClass");
        assert_eq!(class["provisioner"], crate::storage::PROVISIONER);
        assert_eq!(class["volumeBindingMode"], "WaitForFirstConsumer");
        let spec = &find("DaemonSet")["spec"]["template"]["spec"];
        let args: Vec<String> =
            serde_json::from_value(spec["containers"][0]["args"].clone()).unwrap();
        let argv = std::iter::once("kubevirt-controller").chain(args.iter().map(String::as_str));
        let Command::Provisioner(p) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("provisioner")
        };
        let root = p.root.to_str().unwrap();
        let mounts = spec["containers"][0]["volumeMounts"].as_array().unwrap();
        let host = |name: &str| {
            spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .and_then(|v| v["hostPath"]["path"].as_str())
                .map(str::to_string)
        };
        for (path, why) in [(root, "the root"), ("/dev", "the loop devices")] {
            let m = mounts
                .iter()
                .find(|m| m["mountPath"] == path)
                .unwrap_or_else(|| panic!("{why} not mounted"));
            assert_eq!(
                host(m["name"].as_str().unwrap()).as_deref(),
                Some(path),
                "{why}"
            );
        }
        assert_eq!(spec["containers"][0]["securityContext"]["privileged"], true);
        let rules = find("ClusterRole")["rules"].as_array().unwrap();
        let allows = |resource: &str, verb: &str| {
            rules.iter().any(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
                    && r["verbs"].as_array().unwrap().iter().any(|x| x == verb)
            })
        };
        for (resource, verb) in [
            ("persistentvolumeclaims", "watch"),
            ("persistentvolumeclaims/status", "patch"),
            ("persistentvolumes", "create"),
            ("persistentvolumes", "delete"),
            ("persistentvolumes", "patch"),
            ("storageclasses", "list"),
            ("events", "create"),
            ("volumesnapshots", "list"),
            ("volumesnapshotcontents", "watch"),
            ("volumesnapshotcontents", "patch"),
            ("volumesnapshotcontents/status", "patch"),
        ] {
            assert!(allows(resource, verb), "{resource} {verb}");
        }
    }
}
