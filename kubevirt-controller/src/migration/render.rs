//! A migration's target pod: the VMI's own pod ([`crate::vmi::render::pod_for_in`]) with the
//! migration's label, a run directory of its own on the node (`<launcher_root>/<migration
//! uid>`, so a target on the source's node never meets the source's files) and a launcher that
//! waits for the source (`serve --incoming unix:<run dir>/migration.sock`) instead of booting.
//! Unless the cluster allows migrating within a node (the local single-node plane), the pod
//! must not land on a node that runs a pod of the same VMI: upstream's required anti-affinity.

use k8s_openapi::api::core::v1::{Affinity, Pod, PodAffinityTerm, PodAntiAffinity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kubevirt_api::core::v1::VirtualMachineInstance;

use super::{INCOMING_SOCKET, MIGRATION_JOB_LABEL};
use crate::clusterconfig::ClusterConfig;
use crate::vmi::render::{ClaimModes, PodConfig, RUN_DIR_IN_POD, RenderError, pod_for_in};
use crate::vmi::{COMPUTE_CONTAINER, CREATED_BY_LABEL};

/// The node label the anti-affinity spreads over.
const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// The target pod of migration `migration_uid` for `vmi`. `same_node`: the target may run on
/// the source's node (no anti-affinity).
///
/// # Errors
/// What [`pod_for_in`] refuses, and a migration uid that is no plain name.
pub fn target_pod_for(
    vmi: &VirtualMachineInstance,
    migration_uid: &str,
    config: &PodConfig,
    claims: &ClaimModes,
    cluster: &ClusterConfig,
    same_node: bool,
) -> Result<Pod, RenderError> {
    if !crate::node::migration::plain(migration_uid) {
        return Err(RenderError::NoUid);
    }
    let mut pod = pod_for_in(vmi, config, claims, cluster)?;
    let vmi_uid = vmi.metadata.uid.clone().ok_or(RenderError::NoUid)?;
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(MIGRATION_JOB_LABEL.into(), migration_uid.into());
    let Some(spec) = pod.spec.as_mut() else {
        return Ok(pod);
    };
    let run_dir = config.launcher_root.join(migration_uid);
    for v in spec.volumes.iter_mut().flatten() {
        if v.name == "launcher"
            && let Some(h) = v.host_path.as_mut()
        {
            h.path = run_dir.to_string_lossy().into_owned();
        }
    }
    if let Some(compute) = spec
        .containers
        .iter_mut()
        .find(|c| c.name == COMPUTE_CONTAINER)
    {
        compute.command.get_or_insert_with(Vec::new).extend([
            "--incoming".to_string(),
            format!("unix:{RUN_DIR_IN_POD}/{INCOMING_SOCKET}"),
        ]);
    }
    if !same_node {
        let term = PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some([(CREATED_BY_LABEL.to_string(), vmi_uid)].into()),
                ..LabelSelector::default()
            }),
            topology_key: HOSTNAME_TOPOLOGY.into(),
            ..PodAffinityTerm::default()
        };
        let affinity = spec.affinity.get_or_insert_with(Affinity::default);
        affinity
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term);
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config() -> PodConfig {
        PodConfig {
            launcher_image: "registry/launcher:1".into(),
            launcher_root: PathBuf::from("/var/lib/kv/launchers"),
            image_cache: PathBuf::from("/var/lib/kv/images"),
            registry_config_dir: None,
            plain_http_registries: Vec::new(),
            working_dir: PathBuf::from("/"),
        }
    }

    fn vmi() -> VirtualMachineInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "mover", "namespace": "default", "uid": "vmi-uid-1"},
            "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}
        }))
        .expect("vmi")
    }

    #[test]
    fn the_target_pod_has_its_own_run_directory_label_and_incoming_launcher() {
        let cluster = ClusterConfig::default();
        let pod = target_pod_for(
            &vmi(),
            "mig-1",
            &config(),
            &ClaimModes::new(),
            &cluster,
            false,
        )
        .expect("render");
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[MIGRATION_JOB_LABEL], "mig-1");
        assert_eq!(labels[CREATED_BY_LABEL], "vmi-uid-1");
        let spec = pod.spec.expect("spec");
        let launcher = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "launcher")
            .and_then(|v| v.host_path.clone())
            .expect("launcher volume");
        assert_eq!(launcher.path, "/var/lib/kv/launchers/mig-1");
        let command = spec.containers[0].command.clone().unwrap_or_default();
        assert!(
            command.ends_with(&[
                "--incoming".to_string(),
                "unix:/var/run/kubevirt-rs/vmi/migration.sock".to_string()
            ]),
            "{command:?}"
        );
        let anti = spec
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|a| a.required_during_scheduling_ignored_during_execution)
            .expect("anti-affinity");
        assert_eq!(anti[0].topology_key, HOSTNAME_TOPOLOGY);
    }

    #[test]
    fn within_a_node_there_is_no_anti_affinity_and_a_bad_uid_is_refused() {
        let cluster = ClusterConfig::default();
        let pod = target_pod_for(
            &vmi(),
            "mig-1",
            &config(),
            &ClaimModes::new(),
            &cluster,
            true,
        )
        .expect("render");
        assert!(pod.spec.and_then(|s| s.affinity).is_none());
        for bad in ["", "../x", "a/b"] {
            assert!(
                target_pod_for(&vmi(), bad, &config(), &ClaimModes::new(), &cluster, true).is_err()
            );
        }
    }
}
