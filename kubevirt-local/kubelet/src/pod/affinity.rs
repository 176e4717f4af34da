//! Whether a node satisfies a `NodeSelector` (a PersistentVolume's `spec.nodeAffinity.required`),
//! as upstream's `v1helper.MatchNodeSelectorTerms`: the terms are ORed, the requirements of a
//! term ANDed; `matchExpressions` look at the node's labels, `matchFields` at `metadata.name`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

/// What a node is matched on.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|w| w == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [want]) = (value.and_then(number), values) else {
                return false;
            };
            let Some(want) = number(want) else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

fn term(t: &NodeSelectorTerm, node: &NodeFacts) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    // An empty term matches no node (upstream: "a null or empty term matches no objects").
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node.name.as_str());
            value.is_some() && requirement(r, value)
        })
}

/// Whether `node` satisfies `selector`.
pub fn matches(selector: &NodeSelector, node: &NodeFacts) -> bool {
    selector.node_selector_terms.iter().any(|t| term(t, node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn selector(v: serde_json::Value) -> NodeSelector {
        serde_json::from_value(json!({ "nodeSelectorTerms": v })).unwrap()
    }

    fn node(name: &str) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            labels: BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), name.to_string()),
                ("cores".to_string(), "8".to_string()),
            ]),
        }
    }

    #[test]
    fn hostname_in_as_the_provisioner_writes_it() {
        let s = selector(json!([{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}
        ]}]));
        assert!(matches(&s, &node("n1")));
        assert!(!matches(&s, &node("n2")));
    }

    #[test]
    fn terms_are_ored_and_requirements_anded() {
        let s = selector(json!([
            {"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]},
                {"key": "cores", "operator": "Gt", "values": ["16"]}
            ]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
        ]));
        assert!(
            !matches(&s, &node("n1")),
            "n1 has 8 cores, not more than 16"
        );
        assert!(matches(&s, &node("n2")));
        let s = selector(json!([{"matchExpressions": [
            {"key": "cores", "operator": "Lt", "values": ["16"]},
            {"key": "gpu", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["a"]}
        ]}]));
        assert!(matches(&s, &node("n1")));
    }

    #[test]
    fn empty_selectors_match_nothing() {
        assert!(!matches(&selector(json!([])), &node("n1")));
        assert!(!matches(&selector(json!([{}])), &node("n1")));
        let bad = selector(json!([{"matchExpressions": [
            {"key": "cores", "operator": "Gt", "values": ["x"]}
        ]}]));
        assert!(!matches(&bad, &node("n1")));
    }

    proptest! {
        /// `In [values]` on the hostname matches exactly the nodes named in the values.
        #[test]
        fn in_matches_exactly_the_listed_names(
            name in "[a-z0-9-]{1,12}",
            values in proptest::collection::vec("[a-z0-9-]{1,12}", 0..4),
        ) {
            let s = selector(json!([{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": values}
            ]}]));
            prop_assert_eq!(matches(&s, &node(&name)), values.contains(&name));
            let s = selector(json!([{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": values}
            ]}]));
            prop_assert_eq!(matches(&s, &node(&name)), !values.contains(&name));
        }
    }
}
