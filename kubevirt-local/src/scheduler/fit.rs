//! The scheduling decision for one pod: filter the nodes, score the ones that fit, and say why
//! none fits in upstream's words (`0/2 nodes are available: 1 Insufficient memory, 1 node(s)
//! were unschedulable.`).

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::placement::{matches_node_affinity, untolerated_taint};
use super::resources::{
    Amounts, BadQuantity, allocatable, holds_resources, insufficient, least_allocated, non_zero,
    pod_requests,
};

/// What to do with a pending pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind it to this node.
    Bind(String),
    /// No node fits: the `PodScheduled=False` message.
    Unschedulable(String),
}

/// The taint an unschedulable node implicitly has (tolerating it lets a pod on a cordoned node).
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn tolerates_unschedulable(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| {
            let key = t.key.as_deref().unwrap_or_default();
            let op = t.operator.as_deref().unwrap_or("Equal");
            (key == UNSCHEDULABLE_TAINT || (key.is_empty() && op == "Exists"))
                && t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "NoSchedule")
        })
}

/// Why `node` cannot take `pod` (empty: it can). `used` is what the node's pods request.
fn filter(
    pod: &Pod,
    requests: &Amounts,
    node: &Node,
    used: &Amounts,
) -> Result<Vec<String>, BadQuantity> {
    if !ready(node) {
        return Ok(vec!["node(s) were not ready".into()]);
    }
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if cordoned && !tolerates_unschedulable(pod) {
        return Ok(vec!["node(s) were unschedulable".into()]);
    }
    if let Some(t) = untolerated_taint(pod, node) {
        let value = t.value.as_deref().unwrap_or_default();
        return Ok(vec![format!(
            "node(s) had untolerated taint {{{}: {value}}}",
            t.key
        )]);
    }
    if !matches_node_affinity(pod, node) {
        return Ok(vec![
            "node(s) didn't match Pod's node affinity/selector".into(),
        ]);
    }
    let mut free = allocatable(node)?;
    for (name, v) in used {
        *free.entry(name.clone()).or_default() -= v;
    }
    Ok(insufficient(requests, &free)
        .into_iter()
        .map(|r| {
            if r == "pods" {
                "Too many pods".into()
            } else {
                format!("Insufficient {r}")
            }
        })
        .collect())
}

fn add(into: &mut Amounts, from: &Amounts) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Decide where `pod` goes among `nodes`, given every pod in the cluster (`pods`, whose
/// `spec.nodeName` says where they already are).
pub fn decide(pod: &Pod, nodes: &[Node], pods: &[Pod]) -> Result<Decision, BadQuantity> {
    decide_with(pod, nodes, pods, |_| None)
}

/// [`decide`] with one more filter after the others (the volume binding's): why a node that
/// fits otherwise cannot take the pod, or `None`.
pub fn decide_with<P: Borrow<Pod>>(
    pod: &Pod,
    nodes: &[Node],
    pods: &[P],
    extra: impl Fn(&Node) -> Option<String>,
) -> Result<Decision, BadQuantity> {
    if nodes.is_empty() {
        return Ok(Decision::Unschedulable(
            "no nodes available to schedule pods".into(),
        ));
    }
    let requests = pod_requests(pod)?;
    let me = (&pod.metadata.namespace, &pod.metadata.name);
    let mut used: BTreeMap<&str, (Amounts, Amounts)> = BTreeMap::new();
    for other in pods {
        let other: &Pod = other.borrow();
        let Some(node) = other.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if (&other.metadata.namespace, &other.metadata.name) == me || !holds_resources(other) {
            continue;
        }
        // A pod with an unreadable quantity was admitted by someone else; it counts as nothing.
        let Ok(r) = pod_requests(other) else { continue };
        let (exact, scoring) = used.entry(node).or_default();
        add(exact, &r);
        add(scoring, &non_zero(&r));
    }
    let empty = (Amounts::new(), Amounts::new());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(i64, &str)> = None;
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let (exact, scoring) = used.get(name).unwrap_or(&empty);
        let mut why = filter(pod, &requests, node, exact)?;
        if why.is_empty()
            && let Some(r) = extra(node)
        {
            why.push(r);
        }
        if why.is_empty() {
            let mut after = scoring.clone();
            add(&mut after, &non_zero(&requests));
            let score = least_allocated(&allocatable(node)?, &after);
            // Highest score wins; ties go to the first name.
            if best.is_none_or(|(s, n)| score > s || (score == s && name < n)) {
                best = Some((score, name));
            }
        }
        for r in why {
            *reasons.entry(r).or_default() += 1;
        }
    }
    if let Some((_, name)) = best {
        return Ok(Decision::Bind(name.to_string()));
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    Ok(Decision::Unschedulable(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        parts.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, cpu: &str, memory: &str, extra: Value) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        json_patch::merge(&mut n, &extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(name: &str, cpu: &str, memory: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}}))
        .unwrap()
    }

    #[test]
    fn binds_to_the_least_allocated_node() {
        let nodes = [
            node("a", "4", "4Gi", json!({})),
            node("b", "4", "4Gi", json!({})),
        ];
        let pods = [pod("busy", "3", "3Gi", Some("a"))];
        assert_eq!(
            decide(&pod("p", "1", "1Gi", None), &nodes, &pods).unwrap(),
            Decision::Bind("b".into())
        );
    }

    #[test]
    fn explains_like_upstream_when_nothing_fits() {
        let nodes = [
            node("a", "4", "1Gi", json!({})),
            node("b", "4", "8Gi", json!({"spec": {"unschedulable": true}})),
            node(
                "c",
                "4",
                "8Gi",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
        ];
        assert_eq!(
            decide(&pod("p", "1", "2Gi", None), &nodes, &[]).unwrap(),
            Decision::Unschedulable("0/3 nodes are available: 1 Insufficient memory, 1 node(s) were not ready, 1 node(s) were unschedulable.".into())
        );
        assert_eq!(
            decide(&pod("p", "1", "2Gi", None), &[], &[]).unwrap(),
            Decision::Unschedulable("no nodes available to schedule pods".into())
        );
    }

    #[test]
    fn counts_what_the_node_already_runs_but_not_finished_pods() {
        let nodes = [node("a", "2", "4Gi", json!({}))];
        let mut done = pod("done", "2", "1Gi", Some("a"));
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        assert_eq!(
            decide(&pod("p", "2", "1Gi", None), &nodes, &[done]).unwrap(),
            Decision::Bind("a".into())
        );
        let running = pod("run", "1", "1Gi", Some("a"));
        assert_eq!(
            decide(&pod("p", "2", "1Gi", None), &nodes, &[running]).unwrap(),
            Decision::Unschedulable("0/1 nodes are available: 1 Insufficient cpu.".into())
        );
    }

    #[test]
    fn extended_resources_and_pod_count() {
        let kvm = node(
            "kvm",
            "4",
            "4Gi",
            json!({"status": {"allocatable": {"devices.kubevirt.io/kvm": "1", "pods": "1"}}}),
        );
        let mut p: Pod = pod("vm", "1", "1Gi", None);
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert(
                "devices.kubevirt.io/kvm".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        assert_eq!(
            decide(&p, std::slice::from_ref(&kvm), &[]).unwrap(),
            Decision::Bind("kvm".into())
        );
        let plain = node("plain", "4", "4Gi", json!({}));
        assert_eq!(
            decide(&p, std::slice::from_ref(&plain), &[]).unwrap(),
            Decision::Unschedulable(
                "0/1 nodes are available: 1 Insufficient devices.kubevirt.io/kvm.".into()
            )
        );
        let other = pod("other", "0", "0", Some("kvm"));
        assert_eq!(
            decide(&p, &[kvm], &[other]).unwrap(),
            Decision::Unschedulable("0/1 nodes are available: 1 Too many pods.".into())
        );
    }

    #[test]
    fn taints_and_cordons_can_be_tolerated() {
        let nodes = [node(
            "a",
            "4",
            "4Gi",
            json!({"spec": {"unschedulable": true,
            "taints": [{"key": "dedicated", "value": "vm", "effect": "NoSchedule"}]}}),
        )];
        let mut p = pod("p", "1", "1Gi", None);
        assert_eq!(
            decide(&p, &nodes, &[]).unwrap(),
            Decision::Unschedulable(
                "0/1 nodes are available: 1 node(s) were unschedulable.".into()
            )
        );
        p.spec.as_mut().unwrap().tolerations = Some(vec![serde_json::from_value(
            json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"})).unwrap()]);
        assert_eq!(
            decide(&p, &nodes, &[]).unwrap(),
            Decision::Unschedulable(
                "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: vm}.".into()
            )
        );
        p.spec.as_mut().unwrap().tolerations.as_mut().unwrap().push(
            serde_json::from_value(json!({"key": "dedicated", "operator": "Equal", "value": "vm"}))
                .unwrap(),
        );
        assert_eq!(decide(&p, &nodes, &[]).unwrap(), Decision::Bind("a".into()));
    }
}
