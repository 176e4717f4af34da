//! Storage object in-use protection (upstream's StorageObjectInUseProtection admission plugin
//! and the pvc-protection and pv-protection controllers): every claim and volume is created with
//! a finalizer; a claim being deleted keeps it while a scheduled pod that has not finished uses
//! the claim, a volume being deleted while it is Bound.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;

/// The finalizer that keeps a claim in use.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a bound volume.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The finalizer a new object of `kind` gets, if any.
pub fn finalizer_for(kind: &str) -> Option<&'static str> {
    match kind {
        "PersistentVolumeClaim" => Some(PVC_PROTECTION),
        "PersistentVolume" => Some(PV_PROTECTION),
        _ => None,
    }
}

/// Does a scheduled, unfinished pod use the claim?
pub fn claim_in_use(claim: &PersistentVolumeClaim, pods: &[Pod]) -> bool {
    let ns = claim.namespace();
    let name = claim.name_any();
    pods.iter().any(|p| {
        let scheduled = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        p.namespace() == ns
            && scheduled
            && !finished
            && p.spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .into_iter()
                .flatten()
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == name)
                })
    })
}

/// Is the claim being deleted, holding its finalizer, and used by no pod?
pub fn claim_releasable(claim: &PersistentVolumeClaim, pods: &[Pod]) -> bool {
    claim.metadata.deletion_timestamp.is_some()
        && claim.finalizers().iter().any(|f| f == PVC_PROTECTION)
        && !claim_in_use(claim, pods)
}

/// Is the volume being deleted, holding its finalizer, and not Bound?
pub fn volume_releasable(pv: &PersistentVolume) -> bool {
    pv.metadata.deletion_timestamp.is_some()
        && pv.finalizers().iter().any(|f| f == PV_PROTECTION)
        && pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(node: Option<&str>, phase: &str, claim: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": node, "containers": [],
                     "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": phase}}))
        .unwrap()
    }

    #[test]
    fn only_scheduled_unfinished_pods_hold_a_claim() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {
            "name": "c", "namespace": "default", "deletionTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [PVC_PROTECTION]}}))
        .unwrap();
        assert!(!claim_releasable(&claim, &[pod(Some("n"), "Running", "c")]));
        assert!(claim_releasable(&claim, &[pod(None, "Pending", "c")]));
        assert!(claim_releasable(
            &claim,
            &[pod(Some("n"), "Succeeded", "c")]
        ));
        assert!(claim_releasable(
            &claim,
            &[pod(Some("n"), "Running", "other")]
        ));
    }
}
