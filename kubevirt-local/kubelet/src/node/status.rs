//! The `Node` object: registered once (labels), then its status refreshed on every heartbeat.

use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::capacity;

/// Errors registering or reporting the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The API refused a request.
    #[error("{0}: {1}")]
    Api(&'static str, #[source] Box<kube::Error>),
    /// An object could not be built.
    #[error("building an object: {0}")]
    Json(#[source] serde_json::Error),
}

/// What the node reports about itself.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// The address pods and the host reach this node at (`InternalIP`, the pods' `hostIP`).
    pub internal_ip: IpAddr,
    /// `containerd://1.6.20`.
    pub runtime_version: String,
    /// The kubelet's streaming port (`daemonEndpoints.kubeletEndpoint.Port`), 0 if none.
    pub kubelet_port: u16,
    /// The data directory (its file system is the node's ephemeral storage).
    pub data_dir: PathBuf,
    /// When this kubelet started (the `Ready` condition's transition time).
    pub started: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The Go name of this machine's architecture (`amd64`, `arm64`).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The labels every node carries.
fn labels(name: &str) -> Value {
    json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": go_arch(),
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": go_arch(),
        "kubevirt.io/schedulable": "true",
    })
}

/// Creates the node (or updates its labels) and returns its uid.
pub async fn register(client: &kube::Client, name: &str) -> Result<String, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"metadata": {"labels": labels(name)}});
    let node = match nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(n) => n,
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels(name)},
                "spec": {},
            }))
            .map_err(NodeError::Json)?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .map_err(|e| NodeError::Api("creating the node", Box::new(e)))?
        }
        Err(e) => return Err(NodeError::Api("updating the node's labels", Box::new(e))),
    };
    Ok(node.metadata.uid.unwrap_or_default())
}

/// The node's status: capacity, `Ready`, addresses, node info.
pub fn status(info: &NodeInfo) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let cap = capacity::capacity(&info.data_dir);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": info.started})
    };
    json!({
        "capacity": cap,
        "allocatable": cap,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": info.internal_ip.to_string()},
            {"type": "Hostname", "address": info.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": info.kubelet_port}},
        "nodeInfo": {
            "machineID": read_trimmed("/etc/machine-id"),
            "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": info.runtime_version,
            "kubeletVersion": "v1.32.0-kubevirt-local",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": go_arch(),
        },
    })
}

/// Writes the node's status (a heartbeat).
pub async fn report_status(client: &kube::Client, info: &NodeInfo) -> Result<(), NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            &info.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status(info)})),
        )
        .await
        .map_err(|e| NodeError::Api("updating the node's status", Box::new(e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_the_kubevirt_devices_and_ready() {
        let s = status(&NodeInfo {
            name: "n1".into(),
            internal_ip: "10.0.0.1".parse().unwrap(),
            runtime_version: "containerd://1.6.20".into(),
            kubelet_port: 10250,
            data_dir: "/".into(),
            started: "2026-01-01T00:00:00Z".into(),
        });
        assert!(s["capacity"].get(capacity::KVM_RESOURCE).is_some());
        assert!(s["capacity"].get(capacity::TUN_RESOURCE).is_some());
        assert_eq!(s["conditions"][3]["type"], "Ready");
        assert_eq!(s["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(
            s["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
    }
}
