//! The CRI labels upstream's kubelet sets, which let a restarted kubelet find its pods again.

/// The pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The pod's uid.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// The container's name in the pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Marks what this kubelet created (upstream: `io.cri-containerd.kind` is set by containerd).
pub const MANAGED_BY: &str = "io.kubevirt-local.managed";
/// The grace period the container asked for, so a restarted kubelet still honours it.
pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";

/// A label selector for what this kubelet made for pod `ns/name`.
pub fn pod_selector(ns: &str, name: &str) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        (MANAGED_BY.to_string(), "true".to_string()),
        (POD_NAMESPACE.to_string(), ns.to_string()),
        (POD_NAME.to_string(), name.to_string()),
    ])
}
