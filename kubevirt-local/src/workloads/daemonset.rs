//! The DaemonSet controller (upstream `pkg/controller/daemon`): one pod per eligible node,
//! pinned to it with required node affinity on `metadata.name` (the scheduler binds it, as
//! upstream), with the DaemonSet tolerations upstream adds; template changes replace pods
//! `maxUnavailable` at a time (RollingUpdate, default 1) or on deletion (OnDelete).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec, Toleration};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::common::{
    SyncError, Target, claim, delete, pod_active, pod_available, pod_from_template, pod_ready,
    template_hash, write_status,
};
use crate::scheduler::placement::{matches_node_affinity, untolerated_taint};

/// The label naming the template revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What the controller needs besides the client: the nodes, from the controller's watch.
pub struct Context {
    /// The client.
    pub client: Client,
    /// Every node.
    pub nodes: Store<Node>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("nodes", &self.nodes.state().len())
            .finish_non_exhaustive()
    }
}

/// The tolerations upstream adds to every DaemonSet pod (`util.AddOrUpdateDaemonPodTolerations`).
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The pod template for `node`: the DaemonSet's, with the revision label, the daemon
/// tolerations and a required node affinity term that names the node.
pub fn template_for(template: &PodTemplateSpec, hash: &str, node: &str) -> PodTemplateSpec {
    let mut t = template.clone();
    t.metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.into(), hash.into());
    let spec = t.spec.get_or_insert_with(Default::default);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for tol in daemon_tolerations() {
        if !tolerations.contains(&tol) {
            tolerations.push(tol);
        }
    }
    let mut affinity = serde_json::to_value(&spec.affinity).unwrap_or_default();
    if !affinity.is_object() {
        affinity = json!({});
    }
    affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    spec.affinity = serde_json::from_value(affinity).ok();
    t
}

/// The node a daemon pod is for: where it is bound, or the node its affinity names.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// Should `node` run a pod from `template` (its selector, affinity and taints allow it)?
pub fn eligible(template: &PodTemplateSpec, node: &Node) -> bool {
    let name = node.metadata.name.clone().unwrap_or_default();
    let pod = Pod {
        spec: template_for(template, "", &name).spec,
        ..Default::default()
    };
    // The template's own affinity and selector, without the term naming the node.
    let own = Pod {
        spec: template.spec.clone(),
        ..Default::default()
    };
    matches_node_affinity(&own, node) && untolerated_taint(&pod, node).is_none()
}

/// One sync of `ds`.
pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    let t = Target::of("DaemonSet", ds.as_ref());
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = ds.spec.clone();
    let template = spec.template.clone();
    let hash = template_hash(&template);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &t.namespace);
    let all = pods_api
        .list(&ListParams::default())
        .await
        .map_err(t.err("listing pods"))?
        .items;
    let owned = claim(&pods_api, ds.as_ref(), &spec.selector, all, &t).await?;
    let active: Vec<&Pod> = owned.iter().filter(|p| pod_active(p)).collect();
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &active {
        by_node
            .entry(node_of(p).unwrap_or_default())
            .or_default()
            .push(p);
    }
    let nodes: Vec<Arc<Node>> = ctx.nodes.state();
    let wanted: BTreeMap<String, bool> = nodes
        .iter()
        .map(|n| (n.name_any(), eligible(&template, n)))
        .collect();
    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();
    let unavailable_now = wanted
        .iter()
        .filter(|(n, want)| {
            **want
                && !by_node
                    .get(*n)
                    .is_some_and(|ps| ps.iter().any(|p| pod_available(p, min_ready, now)))
        })
        .count();
    // maxUnavailable (default 1; a percentage of the eligible nodes, rounded up, as upstream).
    let desired = wanted.values().filter(|w| **w).count();
    let max_unavailable = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref());
    let max_unavailable = match max_unavailable {
        None => 1,
        Some(v) => super::rollout::scaled(
            Some(v),
            "",
            i32::try_from(desired).unwrap_or(i32::MAX),
            true,
        )
        .map_err(|e| {
            t.invalid(
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                e.to_string(),
            )
        })?,
    };
    let max_unavailable = usize::try_from(max_unavailable).unwrap_or(1);
    let mut budget = max_unavailable.saturating_sub(unavailable_now);

    for (node, want) in &wanted {
        let here = by_node.remove(node).unwrap_or_default();
        if !want {
            for p in here {
                delete(&pods_api, &p.name_any())
                    .await
                    .map_err(t.err("deleting a pod from an ineligible node"))?;
            }
            continue;
        }
        match here.as_slice() {
            [] => {
                let pod =
                    pod_from_template(ds.as_ref(), &t.name, &template_for(&template, &hash, node));
                pods_api
                    .create(&PostParams::default(), &pod)
                    .await
                    .map_err(t.err("creating a pod"))?;
            }
            [first, extra @ ..] => {
                for p in extra {
                    delete(&pods_api, &p.name_any())
                        .await
                        .map_err(t.err("deleting a surplus pod"))?;
                }
                let outdated = first.labels().get(REVISION_LABEL) != Some(&hash);
                let available = pod_available(first, min_ready, now);
                // Replace an outdated pod while the rollout's unavailability budget allows it;
                // an unavailable outdated pod costs nothing more.
                if outdated && !on_delete && (!available || budget > 0) {
                    if available {
                        budget -= 1;
                    }
                    delete(&pods_api, &first.name_any())
                        .await
                        .map_err(t.err("replacing an outdated pod"))?;
                }
            }
        }
    }
    // Pods for nodes that no longer exist.
    for p in by_node.into_values().flatten() {
        delete(&pods_api, &p.name_any())
            .await
            .map_err(t.err("deleting a pod of a gone node"))?;
    }

    let scheduled = |p: &&Pod| wanted.get(&node_of(p).unwrap_or_default()).copied();
    let current = active.iter().filter(|p| scheduled(p) == Some(true)).count();
    let misscheduled = active.iter().filter(|p| scheduled(p) != Some(true)).count();
    let ready = active
        .iter()
        .filter(|p| scheduled(p) == Some(true) && pod_ready(p))
        .count();
    let available = active
        .iter()
        .filter(|p| scheduled(p) == Some(true) && pod_available(p, min_ready, now))
        .count();
    let updated = active
        .iter()
        .filter(|p| scheduled(p) == Some(true) && p.labels().get(REVISION_LABEL) == Some(&hash))
        .count();
    let status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": available,
        "numberUnavailable": desired.saturating_sub(available),
        "updatedNumberScheduled": updated,
        "observedGeneration": ds.metadata.generation,
    });
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &t.namespace);
    let current_status = ds
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    write_status(&api, &t.name, current_status, status)
        .await
        .map_err(t.err("writing status"))?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn daemon_pods_name_their_node_and_tolerate_cordons() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c"}],
            "nodeSelector": {"role": "worker"}}}))
            .unwrap();
        let pinned = template_for(&t, "h", "n1");
        let pod = Pod {
            spec: pinned.spec.clone(),
            ..Default::default()
        };
        assert_eq!(node_of(&pod).as_deref(), Some("n1"));
        assert_eq!(
            pinned.metadata.unwrap().labels.unwrap()[REVISION_LABEL],
            "h"
        );
        assert!(eligible(
            &t,
            &node(
                "n1",
                json!({"role": "worker"}),
                json!({"unschedulable": true,
            "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]})
            )
        ));
        assert!(!eligible(&t, &node("n2", json!({"role": "db"}), json!({}))));
        assert!(!eligible(
            &t,
            &node(
                "n3",
                json!({"role": "worker"}),
                json!({
            "taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]})
            )
        ));
    }
}
