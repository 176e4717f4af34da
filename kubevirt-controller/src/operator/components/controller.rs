//! virt-controller: `kubevirt-controller run` (the image's entrypoint) with the VMI controller
//! (`--vmi-pods`, its pods running the release's virt-launcher image) and the DataVolume
//! controller (its importer pods running the release's cdi-importer image).

use serde_json::{Value, json};

use super::{IMAGE_CACHE, Install, LAUNCHER_ROOT, METRICS_PORT, rbac::CONTROLLER_SA};

/// The Deployment.
pub const NAME: &str = "virt-controller";

/// The arguments of `kubevirt-controller run`.
pub fn args(i: &Install) -> Vec<String> {
    vec![
        "--vmi-pods".into(),
        "--launcher-image".into(),
        i.image("virt-launcher"),
        "--launcher-root".into(),
        LAUNCHER_ROOT.into(),
        "--image-cache".into(),
        IMAGE_CACHE.into(),
        "--importer-image".into(),
        i.image("cdi-importer"),
        // Plain HTTP inside the pod network: virt-controller has no serving certificate yet.
        "--metrics-listen".into(),
        format!("0.0.0.0:{METRICS_PORT}"),
    ]
}

/// The Deployment: one replica (the controllers have no leader election yet, so a second
/// replica would act twice).
pub fn deployment(i: &Install) -> Value {
    let container = i.metrics_container(NAME, NAME, &args(i), METRICS_PORT);
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": i.metadata(NAME, true, NAME),
        "spec": {"replicas": 1, "selector": {"matchLabels": {"kubevirt.io": NAME}},
            "strategy": {"type": "RollingUpdate"},
            "template": {"metadata": i.pod_metadata(NAME), "spec": {
                "serviceAccountName": CONTROLLER_SA,
                "priorityClassName": "kubevirt-cluster-critical",
                "containers": [container],
                "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}]}}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::operator::components::tests::install;
    use clap::Parser;

    #[test]
    fn the_deployment_runs_the_vmi_and_datavolume_controllers_with_the_release_images() {
        let args = crate::operator::components::container_args(&deployment(&install()));
        let cli = Cli::try_parse_from(
            ["kubevirt-controller".to_string(), "run".to_string()]
                .into_iter()
                .chain(args),
        )
        .unwrap();
        let Command::Run {
            pods,
            importer_image,
            metrics,
            ..
        } = cli.command
        else {
            panic!("run")
        };
        let config = pods.config().unwrap().expect("--vmi-pods");
        assert_eq!(config.launcher_image, "127.0.0.1:5000/virt-launcher:v0.1.0");
        assert_eq!(config.launcher_root, std::path::Path::new(LAUNCHER_ROOT));
        assert_eq!(
            importer_image.as_deref(),
            Some("127.0.0.1:5000/cdi-importer:v0.1.0")
        );
        assert_eq!(
            metrics.metrics_listen,
            Some(std::net::SocketAddr::from(([0, 0, 0, 0], METRICS_PORT)))
        );
    }
}
