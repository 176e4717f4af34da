//! The ReplicaSet controller (upstream `pkg/controller/replicaset`): keeps `spec.replicas` active
//! pods that its selector selects, adopting orphans and releasing pods it no longer selects;
//! reports replicas, fullyLabeledReplicas, readyReplicas, availableReplicas and
//! observedGeneration.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::common::{
    SyncError, Target, claim, delete, pod_active, pod_available, pod_from_template, pod_ready,
    selects, write_status,
};

/// At most this many pods are created or deleted in one sync (upstream's burst).
const BURST: usize = 500;

/// Order pods for deletion, most expendable first (upstream `ActivePods` ranking): unassigned
/// before assigned, pending before running, not ready before ready, newer before older.
pub fn deletion_order(pods: &mut [Pod]) {
    let key = |p: &Pod| {
        let assigned = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        let running = phase == Some("Running");
        let created = std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        (assigned, running, pod_ready(p), created, p.name_any())
    };
    pods.sort_by_key(key);
}

/// One sync of `rs`.
pub async fn reconcile(rs: Arc<ReplicaSet>, client: Arc<Client>) -> Result<Action, SyncError> {
    let t = Target::of("ReplicaSet", rs.as_ref());
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = rs.spec.clone();
    let selector = spec.selector.clone();
    let template = spec
        .template
        .clone()
        .ok_or_else(|| t.invalid("spec.template", "Required value"))?;
    let template_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !selects(&selector, &template_labels) {
        return Err(t.invalid(
            "spec.template.metadata.labels",
            "Invalid value: `selector` does not match template `labels`",
        ));
    }
    let pods_api: Api<Pod> = Api::namespaced((*client).clone(), &t.namespace);
    let all = pods_api
        .list(&ListParams::default())
        .await
        .map_err(t.err("listing pods"))?
        .items;
    let owned = claim(&pods_api, rs.as_ref(), &selector, all, &t).await?;
    let mut active: Vec<Pod> = owned.iter().filter(|p| pod_active(p)).cloned().collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    if active.len() < want {
        let pod = pod_from_template(rs.as_ref(), &t.name, &template);
        for _ in 0..(want - active.len()).min(BURST) {
            pods_api
                .create(&PostParams::default(), &pod)
                .await
                .map_err(t.err("creating a pod"))?;
        }
    } else if active.len() > want {
        deletion_order(&mut active);
        for p in active.iter().take((active.len() - want).min(BURST)) {
            delete(&pods_api, &p.name_any())
                .await
                .map_err(t.err("deleting a pod"))?;
        }
    }

    // Status from the pods as they were at the start of this sync (the watch brings the rest).
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let live: Vec<&Pod> = owned.iter().filter(|p| pod_active(p)).collect();
    let available = live
        .iter()
        .filter(|p| pod_available(p, min_ready, now))
        .count();
    let ready = live.iter().filter(|p| pod_ready(p)).count();
    let labeled = live
        .iter()
        .filter(|p| {
            let have = p.metadata.labels.clone().unwrap_or_default();
            template_labels.iter().all(|(k, v)| have.get(k) == Some(v))
        })
        .count();
    let status = json!({
        "replicas": live.len(),
        "fullyLabeledReplicas": labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    });
    let api: Api<ReplicaSet> = Api::namespaced((*client).clone(), &t.namespace);
    let current = rs
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    write_status(&api, &t.name, current, status)
        .await
        .map_err(t.err("writing status"))?;
    // Ready pods become available after minReadySeconds: look again then.
    Ok(if ready > available {
        Action::requeue(Duration::from_secs(
            u64::try_from(min_ready.max(1)).unwrap_or(1),
        ))
    } else {
        Action::await_change()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}))
        .unwrap()
    }

    #[test]
    fn the_most_expendable_pods_go_first() {
        let mut pods = vec![
            pod(
                "old-ready",
                Some("n"),
                "Running",
                true,
                "2024-01-01T00:00:00Z",
            ),
            pod(
                "new-ready",
                Some("n"),
                "Running",
                true,
                "2024-01-02T00:00:00Z",
            ),
            pod(
                "unready",
                Some("n"),
                "Running",
                false,
                "2024-01-01T00:00:00Z",
            ),
            pod(
                "pending",
                Some("n"),
                "Pending",
                false,
                "2024-01-01T00:00:00Z",
            ),
            pod("unbound", None, "Pending", false, "2024-01-01T00:00:00Z"),
        ];
        deletion_order(&mut pods);
        let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            ["unbound", "pending", "unready", "new-ready", "old-ready"]
        );
    }
}
