//! Who the virt-launcher pod's processes run as (pure): upstream's non-root launcher, uid and
//! gid [`LAUNCHER_UID`] (107, upstream's `qemu` user), `runAsNonRoot`, no privilege escalation
//! and every capability dropped (`compute` keeps `NET_BIND_SERVICE`, as upstream's), unless
//! the KubeVirt CR enables upstream's `Root` feature gate, which keeps root in the container.
//!
//! What a non-root launcher cannot do for itself the node agent does, as upstream's
//! virt-handler: it owns the pod's run directory and its disks to [`LAUNCHER_UID`] and makes
//! the tap for the launcher's uid. `/dev/kvm` and `/dev/net/tun` come from the device plugins;
//! the runtime makes them the container user's (containerd's
//! `device_ownership_from_security_context`, which the local node sets and docs/DEPLOY.md asks
//! of a cluster's nodes).

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SecurityContext};

use crate::clusterconfig::ClusterConfig;

/// The launcher's uid and gid in its pod (upstream's non-root `qemu` user).
pub const LAUNCHER_UID: u32 = 107;

/// The feature gate that keeps the launcher root in its pod (upstream's).
pub const ROOT_GATE: &str = "Root";

/// The uid the pod's containers run as under `cluster`: root only when the KubeVirt CR lists
/// the `Root` gate (not when there is no CR, which turns every other gate on).
pub fn launcher_uid(cluster: &ClusterConfig) -> i64 {
    if cluster
        .feature_gates
        .as_ref()
        .is_some_and(|g| g.contains(ROOT_GATE))
    {
        0
    } else {
        i64::from(LAUNCHER_UID)
    }
}

/// The pod's security context: its user, group and `runAsNonRoot` unless root.
pub fn pod_security(cluster: &ClusterConfig) -> PodSecurityContext {
    let uid = launcher_uid(cluster);
    PodSecurityContext {
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        run_as_non_root: Some(uid != 0),
        ..PodSecurityContext::default()
    }
}

/// A container's security context: the pod's user, no privilege escalation, every capability
/// dropped but `keep`. As root (the `Root` gate) the runtime's default capabilities stay, as
/// before the launcher went non-root: the node agent builds the pod network either way.
pub fn container_security(cluster: &ClusterConfig, keep: &[&str]) -> SecurityContext {
    let uid = launcher_uid(cluster);
    let capabilities = (uid != 0).then(|| Capabilities {
        drop: Some(vec!["ALL".into()]),
        add: (!keep.is_empty()).then(|| keep.iter().map(|c| c.to_string()).collect()),
    });
    SecurityContext {
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        run_as_non_root: Some(uid != 0),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities,
        ..SecurityContext::default()
    }
}

/// The `compute` container's: upstream keeps `NET_BIND_SERVICE` (a guest's service on a low
/// port behind the pod's address).
pub fn compute_security(cluster: &ClusterConfig) -> SecurityContext {
    container_security(cluster, &["NET_BIND_SERVICE"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_runs_as_107_with_no_capabilities_unless_the_root_gate_is_on() {
        let cluster = ClusterConfig::default();
        assert_eq!(cluster.feature_gates, None, "no CR: every gate but Root");
        let c = compute_security(&cluster);
        assert_eq!(c.run_as_user, Some(107));
        assert_eq!(c.run_as_group, Some(107));
        assert_eq!(c.run_as_non_root, Some(true));
        assert_eq!(c.allow_privilege_escalation, Some(false));
        let caps = c.capabilities.unwrap();
        assert_eq!(caps.drop.unwrap(), ["ALL"]);
        assert_eq!(caps.add.unwrap(), ["NET_BIND_SERVICE"]);
        let console = container_security(&cluster, &[]);
        assert_eq!(console.capabilities.unwrap().add, None);
        assert_eq!(pod_security(&cluster).run_as_non_root, Some(true));

        let root = ClusterConfig {
            feature_gates: Some([ROOT_GATE.to_string()].into()),
            ..ClusterConfig::default()
        };
        let c = compute_security(&root);
        assert_eq!(c.run_as_user, Some(0));
        assert_eq!(c.run_as_non_root, Some(false));
        assert_eq!(c.capabilities, None);
        assert_eq!(pod_security(&root).run_as_user, Some(0));
    }
}
