//! `kubevirt-controller operator`: the KubeVirt operator (upstream's virt-operator), configured
//! as upstream's through its Deployment's environment: `WATCH_NAMESPACE` (its namespace),
//! `VIRT_OPERATOR_IMAGE` (`REGISTRY/virt-operator:TAG`: the components' registry and tag) and
//! `KUBEVIRT_VERSION` (its version), until SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::operator::{OperatorConfig, target};

/// Arguments of `kubevirt-controller operator`.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// `/metrics` (upstream's virt-operator names: leading and ready status).
    #[command(flatten)]
    pub metrics: super::MetricsArgs,
}

/// The operator's configuration from `env` (the process environment in `run`).
pub fn config_from(env: impl Fn(&str) -> Option<String>) -> Result<OperatorConfig, CliError> {
    let need = |name: &str, what: &str| {
        env(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CliError::Setup(format!("{name} is not set: {what}")))
    };
    let namespace = need(
        "WATCH_NAMESPACE",
        "the namespace of the KubeVirt CR and the components (the Deployment sets it from metadata.namespace)",
    )?;
    let image = need(
        "VIRT_OPERATOR_IMAGE",
        "the operator's own image, REGISTRY/virt-operator:TAG, which names the components' registry and tag",
    )?;
    let (registry, tag) =
        target::parse_operator_image(&image).map_err(|e| CliError::Setup(e.to_string()))?;
    let version = env("KUBEVIRT_VERSION")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| tag.clone());
    let identity = env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("virt-operator-{}", uuid::Uuid::new_v4().simple()));
    Ok(OperatorConfig {
        namespace,
        registry,
        tag,
        version,
        identity,
    })
}

pub(super) fn run(args: OperatorArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let config = config_from(|name| std::env::var(name).ok())?;
    super::on_cluster(args.kubeconfig.clone(), |client, server| async move {
        writeln!(
            out,
            "kubevirt-controller: operator {} ({}) for namespace {} on {server}: components {}/*:{}",
            config.version, config.identity, config.namespace, config.registry, config.tag
        )?;
        let collect = crate::metrics::operator(
            client.clone(),
            config.namespace.clone(),
            config.identity.clone(),
        );
        args.metrics.serve(collect, out).await?;
        out.flush()?;
        crate::operator::run(client, config, crate::signal::terminated()).await;
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_read_and_what_is_missing_is_named() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = config_from(env(&[
            ("WATCH_NAMESPACE", "kubevirt"),
            ("VIRT_OPERATOR_IMAGE", "127.0.0.1:5000/virt-operator:v0.1.0"),
            ("POD_NAME", "virt-operator-abc"),
        ]))
        .unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.registry.as_str(), c.tag.as_str()),
            ("kubevirt", "127.0.0.1:5000", "v0.1.0")
        );
        assert_eq!(
            (c.version.as_str(), c.identity.as_str()),
            ("v0.1.0", "virt-operator-abc")
        );
        let e = config_from(env(&[("VIRT_OPERATOR_IMAGE", "r/virt-operator:v1")])).unwrap_err();
        assert!(
            e.to_string().starts_with("WATCH_NAMESPACE is not set"),
            "{e}"
        );
        let e = config_from(env(&[
            ("WATCH_NAMESPACE", "kubevirt"),
            ("VIRT_OPERATOR_IMAGE", "virt-operator"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("VIRT_OPERATOR_IMAGE \"virt-operator\""),
            "{e}"
        );
    }
}
