//! The cluster defaults VMI admission applies: the server's own ([`State::cluster`]) with the
//! active `KubeVirt` CR's `spec.configuration.developerConfiguration.memoryOvercommit`, as
//! upstream's VMI mutating webhook reads its ClusterConfig. The active CR is the operator's
//! ([`kubevirt_controller::operator::active`]: one deploying or deployed, else the oldest;
//! deleted ones are out). A CR whose configuration fails the operator's checks counts as
//! none (upstream's defaults), where the controllers keep their last good configuration.
//!
//! [`State::cluster`]: super::State::cluster

use kubevirt_api::core::v1::KubeVirt;
use kubevirt_api::defaults::ClusterDefaults;
use kubevirt_controller::clusterconfig::ClusterConfig;
use serde_json::Value;
use std::borrow::Cow;

/// The storage name of KubeVirt CRs.
pub const KUBEVIRTS: &str = "kubevirt.io/kubevirts";

/// Whether admitting a new object of `group`/`kind` reads the KubeVirt CR.
pub fn needed(group: &str, kind: &str) -> bool {
    group == "kubevirt.io" && kind == "VirtualMachineInstance"
}

/// `base` with the memoryOvercommit of the active one of `kubevirts` (stored CRs, any
/// namespace); `base` itself without one.
pub fn defaults<'a>(base: &'a ClusterDefaults, kubevirts: &[Value]) -> Cow<'a, ClusterDefaults> {
    let typed: Vec<KubeVirt> = kubevirts
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    let Some(name) = kubevirt_controller::operator::active(&typed) else {
        return Cow::Borrowed(base);
    };
    // `active` names the CR; of two namespaces' CRs of that name, the first not deleted.
    let Some(cr) = kubevirts
        .iter()
        .find(|v| v["metadata"]["name"] == name.as_str() && v["status"]["phase"] != "Deleted")
    else {
        return Cow::Borrowed(base);
    };
    let overcommit = ClusterConfig::checked(&cr["spec"])
        .map(|c| c.memory_overcommit)
        .unwrap_or(kubevirt_api::defaults::DEFAULT_MEMORY_OVERCOMMIT);
    if overcommit == base.memory_overcommit {
        return Cow::Borrowed(base);
    }
    Cow::Owned(ClusterDefaults {
        memory_overcommit: overcommit,
        ..base.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(name: &str, created: &str, phase: Option<&str>, overcommit: i64) -> Value {
        let mut v = json!({"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "metadata": {"name": name, "namespace": "kubevirt", "creationTimestamp": created},
            "spec": {"configuration": {"developerConfiguration": {"memoryOvercommit": overcommit}}}});
        if let Some(p) = phase {
            v["status"] = json!({"phase": p});
        }
        v
    }

    #[test]
    fn the_active_crs_overcommit_applies() {
        let base = ClusterDefaults::kubevirt_rs();
        assert_eq!(defaults(&base, &[]).memory_overcommit, 100);
        let one = [kv("kv", "2026-01-01T00:00:00Z", None, 150)];
        assert_eq!(defaults(&base, &one).memory_overcommit, 150);
        // The deployed one wins over an older one never deployed; a deleted one is out.
        let two = [
            kv("old", "2026-01-01T00:00:00Z", None, 120),
            kv("live", "2026-02-01T00:00:00Z", Some("Deployed"), 200),
            kv("gone", "2025-01-01T00:00:00Z", Some("Deleted"), 300),
        ];
        assert_eq!(defaults(&base, &two).memory_overcommit, 200);
        // A configuration the operator refuses (memoryOvercommit must be positive) is none.
        let bad = [kv("kv", "2026-01-01T00:00:00Z", None, -5)];
        assert_eq!(defaults(&base, &bad).memory_overcommit, 100);
    }
}
