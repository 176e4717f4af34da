//! virt-handler: `kubevirt-controller node --mode pods` (the image's entrypoint) on every node
//! that runs VMs, serving its endpoint to virt-api on the node's InternalIP (docs/DEPLOY.md has
//! why each host path, capability and host namespace is needed).

use serde_json::{Value, json};

use super::{
    AGENT_PORT, AGENT_TOKEN_SECRET, HANDLER_CERT_SECRET, HANDLER_METRICS_PORT, IMAGE_CACHE,
    Install, LAUNCHER_ROOT, rbac::HANDLER_SA,
};

/// The DaemonSet.
pub const NAME: &str = "virt-handler";
const CERTS: &str = "/etc/virt-handler/servercertificates";
const TOKEN: &str = "/etc/kubevirt-node-agent";
const DEVICE_PLUGINS: &str = crate::node::deviceplugin::DEFAULT_DIR;

/// The arguments of `kubevirt-controller node`.
pub fn args() -> Vec<String> {
    vec![
        "--mode".into(),
        "pods".into(),
        "--only-scheduled".into(),
        "--node-name".into(),
        "$(KUBEVIRT_NODE_NAME)".into(),
        "--launcher".into(),
        "/usr/bin/kubevirt-launcher".into(),
        "--launcher-root".into(),
        LAUNCHER_ROOT.into(),
        // The launchers' shared image cache, which the agent gives to their non-root user.
        "--cache-dir".into(),
        IMAGE_CACHE.into(),
        "--endpoint-listen".into(),
        format!("0.0.0.0:{AGENT_PORT}"),
        "--endpoint-token-file".into(),
        format!("{TOKEN}/token"),
        "--endpoint-tls-cert-file".into(),
        format!("{CERTS}/tls.crt"),
        "--endpoint-tls-key-file".into(),
        format!("{CERTS}/tls.key"),
        // Other nodes' agents, for live migrations: their certificates chain to this CA.
        "--endpoint-ca-file".into(),
        format!("{TOKEN}/ca.crt"),
        // HTTPS with the agent's serving certificate (it listens on the host's network).
        "--metrics-listen".into(),
        format!("0.0.0.0:{HANDLER_METRICS_PORT}"),
        "--metrics-tls-cert-file".into(),
        format!("{CERTS}/tls.crt"),
        "--metrics-tls-key-file".into(),
        format!("{CERTS}/tls.key"),
    ]
}

/// The DaemonSet.
pub fn daemonset(i: &Install) -> Value {
    let mut container = i.metrics_container(NAME, NAME, &args(), HANDLER_METRICS_PORT);
    container["env"] = json!([{"name": "KUBEVIRT_NODE_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]);
    container["securityContext"] = json!({"runAsUser": 0, "privileged": false,
        "capabilities": {"drop": ["ALL"],
            "add": ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "KILL", "DAC_OVERRIDE", "CHOWN", "FOWNER"]}});
    container["volumeMounts"] = json!([
        {"name": "launchers", "mountPath": LAUNCHER_ROOT},
        {"name": "image-cache", "mountPath": IMAGE_CACHE},
        {"name": "dev-net-tun", "mountPath": "/dev/net/tun"},
        {"name": "device-plugins", "mountPath": DEVICE_PLUGINS},
        {"name": "server-certs", "mountPath": CERTS, "readOnly": true},
        {"name": "node-agent-token", "mountPath": TOKEN, "readOnly": true},
    ]);
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": i.metadata(NAME, true, NAME),
    "spec": {"selector": {"matchLabels": {"kubevirt.io": NAME}},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {"metadata": i.pod_metadata(NAME), "spec": {
            "serviceAccountName": HANDLER_SA,
            "priorityClassName": "kubevirt-cluster-critical",
            "nodeSelector": {"kubevirt.io/schedulable": "true"},
            "hostPID": true,
            "hostNetwork": true,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "containers": [container],
            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            "volumes": [
                {"name": "launchers", "hostPath": {"path": LAUNCHER_ROOT, "type": "DirectoryOrCreate"}},
                {"name": "image-cache", "hostPath": {"path": IMAGE_CACHE, "type": "DirectoryOrCreate"}},
                {"name": "dev-net-tun", "hostPath": {"path": "/dev/net/tun", "type": "CharDevice"}},
                // The kubelet's device plugin sockets: the agent serves devices.kubevirt.io/*.
                {"name": "device-plugins", "hostPath": {"path": DEVICE_PLUGINS, "type": "Directory"}},
                {"name": "server-certs", "secret": {"secretName": HANDLER_CERT_SECRET}},
                {"name": "node-agent-token", "secret": {"secretName": AGENT_TOKEN_SECRET,
                    "items": [{"key": "token", "path": "token"}, {"key": "ca.crt", "path": "ca.crt"}]}},
            ]}}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::node::AgentMode;
    use crate::operator::components::{container_args, controller, tests::install};
    use clap::Parser;

    /// Both sides name the same launcher root, the agent's DaemonSet has what pods mode needs,
    /// and the endpoint virt-api reaches is served.
    #[test]
    fn the_daemonset_runs_the_agent_in_pods_mode_beside_the_controller() {
        let ds = daemonset(&install());
        let cli = Cli::try_parse_from(
            ["kubevirt-controller".to_string(), "node".to_string()]
                .into_iter()
                .chain(container_args(&ds)),
        )
        .unwrap();
        let Command::Node(node) = cli.command else {
            panic!("node")
        };
        let (mode, root) = node.mode.mode(node.run_root.clone()).unwrap();
        assert!(matches!(mode, AgentMode::Pods { .. }));
        let run = Cli::try_parse_from(
            ["kubevirt-controller".to_string(), "run".to_string()]
                .into_iter()
                .chain(container_args(&controller::deployment(&install()))),
        )
        .unwrap();
        let Command::Run { pods, .. } = run.command else {
            panic!("run")
        };
        assert_eq!(root, pods.config().unwrap().unwrap().launcher_root);
        assert_eq!(
            node.endpoint_listen,
            Some(std::net::SocketAddr::from(([0, 0, 0, 0], AGENT_PORT)))
        );
        // `/metrics` over HTTPS with the agent's serving certificate, on the port the
        // container names `metrics`.
        assert_eq!(
            node.metrics.metrics_listen,
            Some(std::net::SocketAddr::from((
                [0, 0, 0, 0],
                HANDLER_METRICS_PORT
            )))
        );
        assert_eq!(
            node.metrics.metrics_tls_cert_file,
            Some(std::path::PathBuf::from(format!("{CERTS}/tls.crt")))
        );
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"][0]["ports"][0],
            serde_json::json!({"name": "metrics", "containerPort": HANDLER_METRICS_PORT, "protocol": "TCP"})
        );
        let spec = &ds["spec"]["template"]["spec"];
        let mounted: Vec<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["hostPath"]["path"].as_str())
            .collect();
        assert!(mounted.contains(&root.to_str().unwrap()), "{mounted:?}");
        // The image cache the launchers share, which the agent gives to their user.
        let image_cache = pods.config().unwrap().unwrap().image_cache;
        assert_eq!(node.cache_dir, image_cache);
        assert!(
            mounted.contains(&image_cache.to_str().unwrap()),
            "{mounted:?}"
        );
        // The device plugins are served where the kubelet looks for them.
        assert!(!node.no_device_plugins);
        assert!(
            mounted.contains(&node.device_plugin_dir.to_str().unwrap()),
            "{mounted:?}"
        );
        assert_eq!(spec["hostPID"], true);
        let caps = &spec["containers"][0]["securityContext"]["capabilities"]["add"];
        for cap in ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"] {
            assert!(caps.as_array().unwrap().iter().any(|c| c == cap), "{cap}");
        }
    }
}
