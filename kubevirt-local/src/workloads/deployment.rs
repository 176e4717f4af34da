//! The Deployment controller (upstream `pkg/controller/deployment`): one ReplicaSet per pod
//! template (named `{deployment}-{pod-template-hash}`), rolled with RollingUpdate
//! (maxSurge/maxUnavailable) or Recreate, with the revision annotations `kubectl rollout
//! history|undo` read, and the status and conditions `kubectl rollout status` waits on.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::common::{
    SyncError, Target, claim, controller_ref, delete, template_hash, write_status,
};
use super::rollout::{fenceposts, new_rs_replicas, old_scale_down_budget};
use crate::recorder::{EventType, record};

/// The label that ties a ReplicaSet and its pods to one template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation on Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// `template` without the hash label, to compare a ReplicaSet's template with the Deployment's
/// (upstream `EqualIgnoreHash`).
fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(meta) = t.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
    t
}

/// The new ReplicaSet for `d` (not created yet), with `replicas` and `revision`.
fn new_replica_set(
    d: &Deployment,
    template: &PodTemplateSpec,
    hash: &str,
    replicas: i32,
    revision: i64,
) -> ReplicaSet {
    let spec = d.spec.clone();
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut annotations = BTreeMap::from([
        (REVISION.to_string(), revision.to_string()),
        (
            "deployment.kubernetes.io/desired-replicas".to_string(),
            spec.replicas.unwrap_or(1).to_string(),
        ),
    ]);
    if let Some(cause) = d.annotations().get(CHANGE_CAUSE) {
        annotations.insert(CHANGE_CAUSE.into(), cause.clone());
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("{}-{hash}", d.name_any()), "namespace": d.namespace(),
            "labels": meta.labels, "annotations": annotations,
            "ownerReferences": [controller_ref(d)]},
        "spec": {"replicas": replicas, "minReadySeconds": spec.min_ready_seconds,
            "selector": selector, "template": template},
    }))
    .unwrap_or_default()
}

/// Scale `rs` to `replicas`, recording `ScalingReplicaSet` on `d` as upstream does.
async fn scale(
    api: &Api<ReplicaSet>,
    d: &Deployment,
    rs: &ReplicaSet,
    replicas: i32,
    t: &Target,
) -> Result<(), SyncError> {
    let from = spec_replicas(rs);
    if from == replicas {
        return Ok(());
    }
    let patch = json!({"spec": {"replicas": replicas}});
    let client = api.clone().into_client();
    api.patch(
        &rs.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(t.err("scaling a replica set"))?;
    let way = if replicas > from { "up" } else { "down" };
    let message = format!(
        "Scaled {way} replica set {} from {from} to {replicas}",
        rs.name_any()
    );
    record(
        &client,
        "deployment-controller",
        d,
        EventType::Normal,
        "ScalingReplicaSet",
        &message,
    )
    .await;
    Ok(())
}

/// One sync of `d`.
pub async fn reconcile(d: Arc<Deployment>, client: Arc<Client>) -> Result<Action, SyncError> {
    let t = Target::of("Deployment", d.as_ref());
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = d.spec.clone();
    let replicas = spec.replicas.unwrap_or(1);
    let template = spec.template.clone();
    let rs_api: Api<ReplicaSet> = Api::namespaced((*client).clone(), &t.namespace);
    let all = rs_api
        .list(&ListParams::default())
        .await
        .map_err(t.err("listing replica sets"))?
        .items;
    let mut owned = claim(&rs_api, d.as_ref(), &spec.selector, all, &t).await?;
    owned.sort_by_key(|rs| {
        (
            revision(rs),
            rs.metadata.creation_timestamp.as_ref().map(|c| c.0),
        )
    });

    let hash = template_hash(&without_hash(&template));
    let max_revision = owned.iter().map(revision).max().unwrap_or(0);
    let found = owned.iter().position(|rs| {
        rs.spec.template.as_ref().map(without_hash) == Some(without_hash(&template))
    });
    let strategy = spec.strategy.clone().unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let rolling = strategy.rolling_update.clone().unwrap_or_default();
    let (surge, unavailable) = if recreate {
        (0, replicas)
    } else {
        fenceposts(
            rolling.max_surge.as_ref(),
            rolling.max_unavailable.as_ref(),
            replicas,
        )
        .map_err(|e| t.invalid("spec.strategy.rollingUpdate", e.to_string()))?
    };

    // The new ReplicaSet: found (a rollback makes it the newest revision again) or created.
    let new_rs = match found {
        Some(i) => {
            let rs = owned.remove(i);
            if revision(&rs) < max_revision {
                let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
                rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(t.err("bumping a replica set's revision"))?
            } else {
                rs
            }
        }
        None => {
            let old_total: i32 = owned.iter().map(spec_replicas).sum();
            let first = if recreate {
                if old_total > 0 { 0 } else { replicas }
            } else {
                new_rs_replicas(replicas, surge, 0, old_total)
            };
            let rs = new_replica_set(d.as_ref(), &template, &hash, first, max_revision + 1);
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => created,
                // Made by an earlier sync whose answer we did not see: the next sync adopts it.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::requeue(std::time::Duration::from_secs(1)));
                }
                Err(e) => return Err(t.err("creating a replica set")(e)),
            }
        }
    };
    let old = owned;
    let (_, _, new_available) = status_of(&new_rs);

    if !spec.paused.unwrap_or(false) {
        if recreate {
            for rs in &old {
                scale(&rs_api, &d, rs, 0, &t).await?;
            }
            let old_pods: i32 = old.iter().map(|rs| status_of(rs).0).sum();
            if old_pods == 0 {
                scale(&rs_api, &d, &new_rs, replicas, &t).await?;
            }
        } else {
            let total: i32 = old.iter().map(spec_replicas).sum::<i32>() + spec_replicas(&new_rs);
            let want_new = new_rs_replicas(replicas, surge, spec_replicas(&new_rs), total);
            scale(&rs_api, &d, &new_rs, want_new, &t).await?;
            let total = total - spec_replicas(&new_rs) + want_new;
            let mut budget =
                old_scale_down_budget(replicas, unavailable, total, want_new, new_available);
            // Unhealthy old replicas go first, then available ones, oldest ReplicaSet first.
            let mut left: Vec<i32> = old.iter().map(spec_replicas).collect();
            for (i, rs) in old.iter().enumerate() {
                let unhealthy = (left[i] - status_of(rs).2).max(0).min(budget);
                left[i] -= unhealthy;
                budget -= unhealthy;
            }
            for l in left.iter_mut() {
                let cut = (*l).min(budget);
                *l -= cut;
                budget -= cut;
            }
            for (rs, l) in old.iter().zip(left) {
                scale(&rs_api, &d, rs, l, &t).await?;
            }
        }
    }

    // Old ReplicaSets past revisionHistoryLimit, emptied, are removed (oldest first).
    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
    let empty: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .collect();
    for rs in empty.iter().take(empty.len().saturating_sub(limit)) {
        delete(&rs_api, &rs.name_any())
            .await
            .map_err(t.err("deleting an old replica set"))?;
    }

    // The Deployment's revision is its new ReplicaSet's.
    let rev = new_rs
        .annotations()
        .get(REVISION)
        .cloned()
        .unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced((*client).clone(), &t.namespace);
    if d.annotations().get(REVISION) != Some(&rev) {
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        api.patch(&t.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(t.err("writing the revision"))?;
    }

    let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&new_rs)).collect();
    let sum = |f: fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let total = sum(|rs| status_of(rs).0);
    let ready = sum(|rs| status_of(rs).1);
    let available = sum(|rs| status_of(rs).2);
    let updated = status_of(&new_rs).0;
    let now = super::now();
    let keep_time = |type_: &str, status: &str| {
        d.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some(type_) && c.status.as_deref() == Some(status))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| now.clone())
    };
    let is_available = available >= replicas - unavailable;
    let complete = updated == replicas && total == replicas && status_of(&new_rs).2 == replicas;
    let (a_status, a_reason, a_message) = if is_available {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let rs_name = new_rs.name_any();
    // Progress (upstream): any count moving, or another new ReplicaSet. Without progress for
    // progressDeadlineSeconds, an unfinished rollout is ProgressDeadlineExceeded, which makes
    // `kubectl rollout status` stop waiting.
    let old_status = d.status.clone().unwrap_or_default();
    let old_progressing = old_status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some("Progressing"));
    let moved = (
        old_status.replicas,
        old_status.updated_replicas,
        old_status.ready_replicas,
        old_status.available_replicas,
    ) != (Some(total), Some(updated), Some(ready), Some(available))
        || old_progressing
            .and_then(|c| c.message.as_deref())
            .is_none_or(|m| !m.contains(&format!("\"{rs_name}\"")));
    let now_ts = jiff::Timestamp::now();
    let last_progress = match old_progressing.and_then(|c| c.last_update_time.as_ref()) {
        Some(t) if !moved => t.0,
        _ => now_ts,
    };
    let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
    let stalled = now_ts.as_second() - last_progress.as_second();
    let paused = spec.paused.unwrap_or(false);
    let exceeded = !complete && !paused && stalled > deadline;
    let (p_status, p_reason, p_message) = if complete {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else if exceeded {
        (
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
        )
    } else {
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    let last_update = last_progress.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (total - available).max(0),
        "conditions": [
            {"type": "Available", "status": a_status, "reason": a_reason, "message": a_message,
             "lastUpdateTime": keep_time("Available", a_status), "lastTransitionTime": keep_time("Available", a_status)},
            {"type": "Progressing", "status": p_status, "reason": p_reason, "message": p_message,
             "lastUpdateTime": last_update, "lastTransitionTime": keep_time("Progressing", p_status)},
        ],
    });
    // Compare without the times, which a rewrite would change every sync.
    let strip = |mut v: serde_json::Value| {
        for c in v["conditions"].as_array_mut().into_iter().flatten() {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastUpdateTime");
                m.remove("lastTransitionTime");
            }
        }
        v
    };
    let current = d.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
    if current.clone().map(strip) != Some(strip(status.clone())) {
        write_status(&api, &t.name, current, status)
            .await
            .map_err(t.err("writing status"))?;
    }
    // An unfinished rollout is looked at again when its deadline would pass.
    Ok(if complete || exceeded || paused {
        Action::await_change()
    } else {
        let left = u64::try_from(deadline - stalled + 1).unwrap_or(1).max(1);
        Action::requeue(std::time::Duration::from_secs(left))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_label_does_not_count_when_comparing_templates() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
            .unwrap();
        let d: Deployment = serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": t}}),
        )
        .unwrap();
        let rs = new_replica_set(&d, &t, "abc", 1, 3);
        let rs_template = rs.spec.template.clone().unwrap();
        assert_eq!(
            rs_template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .as_ref()
                .unwrap()[HASH_LABEL],
            "abc"
        );
        assert_eq!(without_hash(&rs_template), t);
        assert_eq!(rs.metadata.name.as_deref(), Some("web-abc"));
        assert_eq!(revision(&rs), 3);
        assert_eq!(rs.spec.selector.match_labels.unwrap()[HASH_LABEL], "abc");
    }
}
