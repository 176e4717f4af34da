//! Where a pod may go regardless of resources: `nodeSelector`, required node affinity and
//! taints/tolerations (upstream's NodeAffinity and TaintToleration filter plugins).

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

/// Does `node` satisfy the pod's `nodeSelector` and its required node affinity terms?
pub fn matches_node_affinity(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    // Terms are ORed; an empty list of terms matches nothing (upstream).
    let affinity_ok =
        required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

/// One term: every expression and every field requirement holds; a term with neither matches
/// nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    exprs
        .iter()
        .all(|r| requirement(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // The only supported field is metadata.name (upstream validation).
            r.key == "metadata.name" && requirement(r, Some(&name))
        })
}

/// One requirement against the value a node has for its key (`None`: no such label).
pub fn requirement(r: &NodeSelectorRequirement, have: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => have.is_some_and(|h| values.iter().any(|v| v == h)),
        "NotIn" => have.is_none_or(|h| values.iter().all(|v| v != h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        // Gt/Lt take exactly one integer value; anything else matches nothing.
        "Gt" | "Lt" => match (have.and_then(int), values) {
            (Some(h), [v]) => {
                int(v).is_some_and(|v| if r.operator == "Gt" { h > v } else { h < v })
            }
            _ => false,
        },
        _ => false,
    }
}

/// Does a toleration tolerate a taint (upstream `Toleration.ToleratesTaint`)?
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => true,
        "" | "Equal" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The first NoSchedule/NoExecute taint of `node` the pod does not tolerate.
pub fn untolerated_taint<'a>(pod: &Pod, node: &'a Node) -> Option<&'a Taint> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn node(labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap()
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn operators_follow_upstream() {
        assert!(requirement(&req("k", "In", &["a", "b"]), Some("b")));
        assert!(!requirement(&req("k", "In", &["a"]), None));
        assert!(requirement(&req("k", "NotIn", &["a"]), None));
        assert!(!requirement(&req("k", "NotIn", &["a"]), Some("a")));
        assert!(requirement(&req("k", "Exists", &[]), Some("")));
        assert!(requirement(&req("k", "DoesNotExist", &[]), None));
        assert!(requirement(&req("k", "Gt", &["3"]), Some("4")));
        assert!(!requirement(&req("k", "Gt", &["3"]), Some("3")));
        assert!(requirement(&req("k", "Lt", &["3"]), Some("-1")));
        assert!(!requirement(&req("k", "Lt", &["x"]), Some("1")));
        assert!(!requirement(&req("k", "Bogus", &[]), Some("1")));
    }

    #[test]
    fn selector_and_affinity_terms() {
        let n = node(json!({"zone": "a", "gpu": "2"}), json!([]));
        assert!(matches_node_affinity(
            &pod(json!({"containers": [], "nodeSelector": {"zone": "a"}})),
            &n
        ));
        assert!(!matches_node_affinity(
            &pod(json!({"containers": [], "nodeSelector": {"zone": "b"}})),
            &n
        ));
        let affinity = |terms: serde_json::Value| {
            pod(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
        };
        // ORed terms, ANDed expressions.
        assert!(matches_node_affinity(
            &affinity(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                  {"key": "gpu", "operator": "Gt", "values": ["1"]}]}])),
            &n
        ));
        assert!(!matches_node_affinity(
            &affinity(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                  {"key": "gpu", "operator": "Gt", "values": ["2"]}]}])),
            &n
        ));
        assert!(matches_node_affinity(
            &affinity(json!([
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])),
            &n
        ));
        assert!(
            !matches_node_affinity(&affinity(json!([{}])), &n),
            "an empty term matches nothing"
        );
        assert!(!matches_node_affinity(&affinity(json!([])), &n));
    }

    #[test]
    fn taints_need_a_matching_toleration() {
        let n = node(
            json!({}),
            json!([{"key": "dedicated", "value": "vm", "effect": "NoSchedule"},
                                      {"key": "soft", "effect": "PreferNoSchedule"}]),
        );
        assert_eq!(
            untolerated_taint(&pod(json!({"containers": []})), &n).map(|t| t.key.as_str()),
            Some("dedicated")
        );
        for tol in [
            json!({"key": "dedicated", "operator": "Equal", "value": "vm"}),
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}),
            json!({"operator": "Exists"}),
        ] {
            assert!(
                untolerated_taint(
                    &pod(json!({"containers": [], "tolerations": [tol.clone()]})),
                    &n
                )
                .is_none(),
                "{tol}"
            );
        }
        for tol in [
            json!({"key": "dedicated", "value": "other"}),
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
        ] {
            assert!(
                untolerated_taint(
                    &pod(json!({"containers": [], "tolerations": [tol.clone()]})),
                    &n
                )
                .is_some(),
                "{tol}"
            );
        }
    }

    proptest! {
        /// Whatever a user writes in a term, matching never panics, and NotIn/DoesNotExist are
        /// the negations of In/Exists.
        #[test]
        fn negations_hold(key in "[a-z]{1,3}", have in proptest::option::of("[a-z0-9-]{0,3}"),
                          values in proptest::collection::vec("[a-z0-9-]{0,3}", 0..4)) {
            let v: Vec<&str> = values.iter().map(String::as_str).collect();
            let h = have.as_deref();
            prop_assert_eq!(requirement(&req(&key, "In", &v), h), !requirement(&req(&key, "NotIn", &v), h));
            prop_assert_eq!(requirement(&req(&key, "Exists", &v), h), !requirement(&req(&key, "DoesNotExist", &v), h));
            let _ = requirement(&req(&key, "Gt", &v), h);
            let _ = requirement(&req(&key, "Lt", &v), h);
        }
    }
}
