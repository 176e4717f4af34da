//! The Job controller (upstream `pkg/controller/job`, the non-indexed part): runs pods until
//! `completions` succeed (`parallelism` at a time), or fails the Job once more than
//! `backoffLimit` pods have failed; reports active/ready/succeeded/failed, startTime,
//! completionTime and the `Complete`/`Failed` conditions `kubectl wait` reads. A Job's pods are
//! the ones it controls (owner reference); they carry `batch.kubernetes.io/job-name` and
//! `batch.kubernetes.io/controller-uid`, as upstream's do.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::common::{
    SyncError, Target, controller_of, delete, pod_from_template, pod_ready, write_status,
};

/// Where a Job stands, from its pods' counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep this many pods active.
    Run(usize),
    /// Enough pods succeeded.
    Complete,
    /// More pods failed than `backoffLimit` allows.
    Failed,
}

/// Decide from the counts (upstream: completions unset means "one success, then done when the
/// rest finish"; parallelism defaults to 1, backoffLimit to 6).
pub fn verdict(
    completions: Option<i32>,
    parallelism: i32,
    backoff_limit: i32,
    active: usize,
    succeeded: usize,
    failed: usize,
) -> Verdict {
    let as_usize = |v: i32| usize::try_from(v).unwrap_or(0);
    if failed > as_usize(backoff_limit) {
        return Verdict::Failed;
    }
    match completions {
        Some(c) if succeeded >= as_usize(c) => Verdict::Complete,
        Some(c) => Verdict::Run(as_usize(parallelism).min(as_usize(c) - succeeded)),
        None if succeeded > 0 && active == 0 => Verdict::Complete,
        None if succeeded > 0 => Verdict::Run(active.min(as_usize(parallelism))),
        None => Verdict::Run(as_usize(parallelism)),
    }
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
}

/// One sync of `job`.
pub async fn reconcile(job: Arc<Job>, client: Arc<Client>) -> Result<Action, SyncError> {
    let t = Target::of("Job", job.as_ref());
    if job.metadata.deletion_timestamp.is_some() || finished(&job) {
        return Ok(Action::await_change());
    }
    let spec = job.spec.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced((*client).clone(), &t.namespace);
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default())
        .await
        .map_err(t.err("listing pods"))?
        .items
        .into_iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !matches!(phase(p).as_str(), "Succeeded" | "Failed")
        })
        .collect();
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count();
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count();
    let suspended = spec.suspend.unwrap_or(false);
    let v = verdict(
        spec.completions,
        spec.parallelism.unwrap_or(1),
        spec.backoff_limit.unwrap_or(6),
        active.len(),
        succeeded,
        failed,
    );
    let want = match v {
        Verdict::Run(n) if !suspended => n,
        _ => 0,
    };
    if active.len() > want {
        for p in active.iter().skip(want) {
            delete(&pods_api, &p.name_any())
                .await
                .map_err(t.err("deleting a pod"))?;
        }
    } else if active.len() < want {
        let mut template = spec.template.clone();
        let labels = template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        labels.insert("batch.kubernetes.io/job-name".into(), t.name.clone());
        labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
        let pod = pod_from_template(job.as_ref(), &t.name, &template);
        for _ in active.len()..want {
            pods_api
                .create(&PostParams::default(), &pod)
                .await
                .map_err(t.err("creating a pod"))?;
        }
    }

    let now = super::now();
    let old = job.status.clone().unwrap_or_default();
    let start = old
        .start_time
        .map(|s| s.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    let mut status = json!({
        "active": want,
        "ready": active.iter().filter(|p| pod_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed,
        "startTime": start.unwrap_or_else(|| now.clone()),
    });
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now})
    };
    match v {
        Verdict::Complete => {
            status["active"] = json!(0);
            status["completionTime"] = json!(now);
            status["conditions"] = json!([
                condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods"
                ),
                condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods"
                ),
            ]);
        }
        Verdict::Failed => {
            status["active"] = json!(0);
            status["conditions"] = json!([
                condition(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit"
                ),
                condition(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit"
                ),
            ]);
        }
        Verdict::Run(_) if suspended => {
            status["conditions"] = json!([condition("Suspended", "JobSuspended", "Job suspended")]);
        }
        Verdict::Run(_) => {}
    }
    let api: Api<Job> = Api::namespaced((*client).clone(), &t.namespace);
    let current = job
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok());
    // Unchanged counts: no write (the times alone would change every sync).
    let same = current.as_ref().is_some_and(|c| {
        ["active", "ready", "succeeded", "failed"]
            .iter()
            .all(|k| c.get(*k).unwrap_or(&json!(0)) == status.get(*k).unwrap_or(&Value::Null))
            && c.get("conditions").is_none()
            && status.get("conditions").is_none()
    });
    if !same {
        write_status(&api, &t.name, current, status)
            .await
            .map_err(t.err("writing status"))?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_upstream() {
        assert_eq!(verdict(None, 1, 6, 0, 0, 0), Verdict::Run(1));
        assert_eq!(verdict(None, 1, 6, 0, 1, 0), Verdict::Complete);
        assert_eq!(verdict(Some(3), 2, 6, 0, 2, 0), Verdict::Run(1));
        assert_eq!(verdict(Some(3), 2, 6, 0, 3, 0), Verdict::Complete);
        assert_eq!(verdict(Some(3), 2, 1, 0, 0, 2), Verdict::Failed);
        assert_eq!(verdict(Some(3), 2, 1, 0, 0, 1), Verdict::Run(2));
    }
}
