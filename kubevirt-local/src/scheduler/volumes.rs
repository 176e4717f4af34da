//! kube-scheduler's VolumeBinding plugin: a pod's claims must exist; an unbound claim whose
//! class binds immediately keeps the pod unschedulable until the binder binds it; a bound
//! claim's volume must admit the node (its node affinity); an unbound WaitForFirstConsumer
//! claim lets the scheduler choose the node, which it then writes into the claim
//! (`volume.kubernetes.io/selected-node`) for the provisioner, binding the pod only once every
//! claim is bound.

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;

use crate::volumes::matching::{admits_node, best_match, claim_class};
use crate::volumes::plan::{BIND_COMPLETED, NO_PROVISIONER, SELECTED_NODE};

/// Upstream's reason for a node a bound volume does not admit.
pub const AFFINITY_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Upstream's reason for a node no volume can be found or made on.
pub const NO_VOLUME: &str = "node(s) didn't find available persistent volumes to bind";
/// Upstream's reason for a claim bound to a volume that does not exist.
pub const MISSING_VOLUME: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// A pod's claims, as the filter needs them.
#[derive(Debug, Clone, Default)]
pub struct PodClaims {
    /// Bound claims' volume names.
    pub bound: Vec<String>,
    /// Unbound claims waiting for their first consumer (this pod).
    pub waiting: Vec<PersistentVolumeClaim>,
}

fn class_named<'a>(classes: &'a [StorageClass], name: &str) -> Option<&'a StorageClass> {
    classes.iter().find(|c| c.name_any() == name)
}

/// The pod's claims, or why no node can take the pod (upstream's PreFilter message).
pub fn prefilter(
    pod: &Pod,
    claims: &[PersistentVolumeClaim],
    classes: &[StorageClass],
) -> Result<PodClaims, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut out = PodClaims::default();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    for v in volumes {
        let Some(name) = v
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str())
        else {
            continue;
        };
        let Some(claim) = claims
            .iter()
            .find(|c| c.metadata.namespace.as_deref() == Some(&ns) && c.name_any() == name)
        else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if !volume.is_empty() && claim.annotations().contains_key(BIND_COMPLETED) {
            out.bound.push(volume);
            continue;
        }
        let delayed = class_named(classes, &claim_class(claim))
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        if !delayed {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        out.waiting.push(claim.clone());
    }
    Ok(out)
}

/// Does the class's `allowedTopologies` admit `node` (none admits every node)?
fn topology_admits(class: &StorageClass, node: &Node) -> bool {
    let Some(terms) = class
        .allowed_topologies
        .as_deref()
        .filter(|t| !t.is_empty())
    else {
        return true;
    };
    let labels = node.labels();
    terms.iter().any(|t| {
        t.match_label_expressions
            .iter()
            .flatten()
            .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
    })
}

/// Why `node` cannot serve the pod's claims, or `None`.
pub fn filter(
    claims: &PodClaims,
    node: &Node,
    volumes: &[PersistentVolume],
    classes: &[StorageClass],
) -> Option<String> {
    for name in &claims.bound {
        match volumes.iter().find(|v| v.name_any() == *name) {
            None => return Some(MISSING_VOLUME.into()),
            Some(pv) if !admits_node(pv, node) => return Some(AFFINITY_CONFLICT.into()),
            Some(_) => {}
        }
    }
    let node_name = node.name_any();
    for claim in &claims.waiting {
        if claim
            .annotations()
            .get(SELECTED_NODE)
            .is_some_and(|n| *n != node_name)
        {
            return Some(NO_VOLUME.into());
        }
        if best_match(volumes, claim, Some(node)).is_some() {
            continue;
        }
        let provisionable = class_named(classes, &claim_class(claim))
            .is_some_and(|c| c.provisioner != NO_PROVISIONER && topology_admits(c, node));
        if !provisionable {
            return Some(NO_VOLUME.into());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(name: &str, class: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        let annotations = if volume.is_some() {
            json!({BIND_COMPLETED: "yes"})
        } else {
            json!({})
        };
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default",
            "annotations": annotations},
            "spec": {"storageClassName": class, "volumeName": volume, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap()
    }

    fn class(name: &str, mode: &str) -> StorageClass {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "provisioner": "example.com/p",
            "volumeBindingMode": mode}),
        )
        .unwrap()
    }

    fn pod(claims: &[&str]) -> Pod {
        let volumes: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [], "volumes": volumes}}))
        .unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"kubernetes.io/hostname": name}}}))
        .unwrap()
    }

    #[test]
    fn prefilter_says_why_like_upstream() {
        let classes = [
            class("now", "Immediate"),
            class("later", "WaitForFirstConsumer"),
        ];
        let claims = [
            claim("a", "now", None),
            claim("b", "later", None),
            claim("c", "now", Some("pv")),
        ];
        assert_eq!(
            prefilter(&pod(&["x"]), &claims, &classes).unwrap_err(),
            "persistentvolumeclaim \"x\" not found"
        );
        assert_eq!(
            prefilter(&pod(&["a"]), &claims, &classes).unwrap_err(),
            "pod has unbound immediate PersistentVolumeClaims"
        );
        let ok = prefilter(&pod(&["b", "c"]), &claims, &classes).unwrap();
        assert_eq!(ok.bound, ["pv"]);
        assert_eq!(ok.waiting.len(), 1);
    }

    #[test]
    fn bound_volumes_pin_the_node() {
        let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "pv"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}}))
        .unwrap();
        let claims = PodClaims {
            bound: vec!["pv".into()],
            waiting: vec![],
        };
        assert_eq!(
            filter(&claims, &node("a"), std::slice::from_ref(&pv), &[]),
            None
        );
        assert_eq!(
            filter(&claims, &node("b"), std::slice::from_ref(&pv), &[]).as_deref(),
            Some(AFFINITY_CONFLICT)
        );
        assert_eq!(
            filter(&claims, &node("a"), &[], &[]).as_deref(),
            Some(MISSING_VOLUME)
        );
    }

    #[test]
    fn a_waiting_claim_keeps_its_selected_node() {
        let classes = [class("later", "WaitForFirstConsumer")];
        let mut c = claim("b", "later", None);
        let claims = PodClaims {
            bound: vec![],
            waiting: vec![c.clone()],
        };
        assert_eq!(filter(&claims, &node("a"), &[], &classes), None);
        c.metadata.annotations = Some([(SELECTED_NODE.to_string(), "a".to_string())].into());
        let claims = PodClaims {
            bound: vec![],
            waiting: vec![c],
        };
        assert_eq!(filter(&claims, &node("a"), &[], &classes), None);
        assert_eq!(
            filter(&claims, &node("b"), &[], &classes).as_deref(),
            Some(NO_VOLUME)
        );
    }
}
