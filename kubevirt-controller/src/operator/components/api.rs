//! virt-api: `kubevirt-controller api` (the image's entrypoint) serving `subresources.kubevirt.io`
//! over TLS behind two APIServices, with the serving certificate and the node agents' token
//! the operator keeps in Secrets.

use base64::Engine;
use serde_json::{Value, json};

use super::{AGENT_PORT, AGENT_TOKEN_SECRET, API_CERT_SECRET, Install, rbac::API_SA, strings};
use crate::api::discovery::{GROUP, VERSIONS};

/// The Deployment and the Service.
pub const NAME: &str = "virt-api";
const CERTS: &str = "/etc/virt-api/certificates";
const AGENT: &str = "/etc/kubevirt-node-agent";

/// The names the serving certificate must carry (the Service's DNS names).
pub fn service_names(namespace: &str) -> Vec<String> {
    vec![
        format!("{NAME}.{namespace}.svc"),
        format!("{NAME}.{namespace}.svc.cluster.local"),
        format!("{NAME}.{namespace}"),
        NAME.to_string(),
    ]
}

/// The arguments of `kubevirt-controller api` in the Deployment.
pub fn args() -> Vec<String> {
    let mut args = strings(&["--listen", "0.0.0.0:8443"]);
    args.extend([
        "--tls-cert-file".into(),
        format!("{CERTS}/tls.crt"),
        "--tls-private-key-file".into(),
        format!("{CERTS}/tls.key"),
        "--node-agent-port".into(),
        AGENT_PORT.to_string(),
        "--node-agent-token-file".into(),
        format!("{AGENT}/token"),
        "--node-agent-ca-file".into(),
        format!("{AGENT}/ca.crt"),
    ]);
    args
}

/// The Deployment.
pub fn deployment(i: &Install) -> Value {
    let mut container = i.container(NAME, NAME, &args());
    container["ports"] = json!([{"name": "https", "containerPort": 8443, "protocol": "TCP"}]);
    container["volumeMounts"] = json!([
        {"name": "kubevirt-virt-api-certs", "mountPath": CERTS, "readOnly": true},
        {"name": "node-agent-token", "mountPath": AGENT, "readOnly": true},
    ]);
    container["readinessProbe"] = json!({"tcpSocket": {"port": 8443}, "periodSeconds": 10});
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": i.metadata(NAME, true, NAME),
    "spec": {"replicas": 1, "selector": {"matchLabels": {"kubevirt.io": NAME}},
        "strategy": {"type": "RollingUpdate"},
        "template": {"metadata": i.pod_metadata(NAME), "spec": {
            "serviceAccountName": API_SA,
            "priorityClassName": "kubevirt-cluster-critical",
            "containers": [container],
            "securityContext": {"runAsNonRoot": false},
            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            "volumes": [
                {"name": "kubevirt-virt-api-certs", "secret": {"secretName": API_CERT_SECRET}},
                {"name": "node-agent-token", "secret": {"secretName": AGENT_TOKEN_SECRET}},
            ]}}}})
}

/// The Service the APIServices name.
pub fn service(i: &Install) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": i.metadata(NAME, true, NAME),
        "spec": {"selector": {"kubevirt.io": NAME}, "type": "ClusterIP",
            "ports": [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]}})
}

/// One APIService per version of `subresources.kubevirt.io`; `caBundle` is `ca_pem` (none:
/// left out).
pub fn apiservices(i: &Install, ca_pem: Option<&str>) -> Vec<Value> {
    VERSIONS
        .iter()
        .enumerate()
        .map(|(n, version)| {
            let mut spec = json!({"group": GROUP, "version": version,
                "groupPriorityMinimum": 1000, "versionPriority": 15 - 5 * n as i64,
                "service": {"name": NAME, "namespace": i.namespace, "port": 443}});
            if let Some(ca) = ca_pem {
                spec["caBundle"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(ca.as_bytes()));
            }
            json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": i.metadata(&format!("{version}.{GROUP}"), false, NAME), "spec": spec})
        })
        .collect()
}

/// virt-api's Deployment, Service and APIServices.
pub fn objects(i: &Install, ca_pem: Option<&str>) -> Vec<Value> {
    let mut out = vec![deployment(i), service(i)];
    out.extend(apiservices(i, ca_pem));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::components::tests::install;

    #[test]
    fn the_apiservices_name_every_version_and_carry_the_ca() {
        let services = apiservices(&install(), Some("PEM"));
        let versions: Vec<&str> = services
            .iter()
            .map(|s| s["spec"]["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, VERSIONS);
        for s in &services {
            assert_eq!(s["spec"]["group"], GROUP);
            assert_eq!(s["spec"]["caBundle"], "UEVN");
            assert_eq!(s["spec"]["service"]["name"], NAME);
        }
        assert!(
            apiservices(&install(), None)[0]["spec"]
                .get("caBundle")
                .is_none()
        );
    }

    #[test]
    fn the_deployment_runs_the_api_command_with_the_mounted_files() {
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(
            ["kubevirt-controller".to_string(), "api".to_string()]
                .into_iter()
                .chain(args()),
        )
        .unwrap();
        let crate::cli::Command::Api(a) = cli.command else {
            panic!("api")
        };
        let d = deployment(&install());
        let mounts = d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].clone();
        let mounted = |path: &std::path::Path| {
            mounts
                .as_array()
                .unwrap()
                .iter()
                .any(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        };
        assert!(mounted(&a.tls_cert_file) && mounted(&a.node_agent_token_file));
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "127.0.0.1:5000/virt-api:v0.1.0"
        );
    }
}
