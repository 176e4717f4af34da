//! One sync of a DataVolume as a pure function of what the controller observed: what to create
//! or delete, and the status to write (phase, progress, restart count, and the Bound, Ready and
//! Running conditions as upstream's).
//!
//! Phases: `Pending` (no claim yet, or a spec that cannot be acted on, or a clone's source is
//! missing or not populated), `ImportScheduled`/`CloneScheduled` (the importer pod waits for its
//! node or its containers), `ImportInProgress`/`CloneInProgress` (it runs, or restarts after a
//! failure: `Running=False, reason Error` says why), `Succeeded` (the claim is marked
//! populated; the pod is removed), `Failed` (the pod failed for good).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::cdi::v1beta1::{DataVolume, DataVolumeCondition, DataVolumeStatus};

use super::claim::for_data_volume_with;
use super::importer::node_pull::SERVER_CONTAINER;
use super::importer::{Source, pod_for, source_of};
use super::progress::format;
use super::{ALLOW_CLAIM_ADOPTION, DataVolumeConfig, POD_PHASE, PRE_POPULATED, RETAIN_POD};

/// What one sync looks at.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The DataVolume.
    pub dv: &'a DataVolume,
    /// The claim of its name, if one exists.
    pub claim: Option<&'a PersistentVolumeClaim>,
    /// Its importer pod, if one exists.
    pub pod: Option<&'a Pod>,
    /// A clone's source claim, if the DataVolume clones one and it exists.
    pub source_claim: Option<&'a PersistentVolumeClaim>,
    /// The StorageProfile of the class a `spec.storage` claim gets, if it has one.
    pub profile: Option<&'a crate::cdi::storageprofile::Profile>,
    /// The importer's progress in percent, if it could be read.
    pub progress: Option<f64>,
    /// The controller's settings.
    pub config: &'a DataVolumeConfig,
    /// The time now.
    pub now: Timestamp,
}

/// The outcome of one sync.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Create this claim.
    pub create_claim: Option<PersistentVolumeClaim>,
    /// Make the DataVolume the claim's controlling owner (an adopted claim).
    pub adopt_claim: bool,
    /// Merge these annotations into the claim.
    pub annotate_claim: BTreeMap<String, String>,
    /// Create this importer pod.
    pub create_pod: Option<Pod>,
    /// Delete the importer pod (its work is done).
    pub delete_pod: bool,
    /// The status to write.
    pub status: DataVolumeStatus,
}

/// One condition as the sync sees it: (status, reason, message).
type Cond = (&'static str, String, String);

/// Plans one sync.
pub fn plan(o: Observed<'_>) -> Plan {
    let dv = o.dv;
    let name = dv.metadata.name.clone().unwrap_or_default();
    let old = dv.status.clone().unwrap_or_default();
    let mut plan = Plan::default();
    let mut progress = old.progress.clone();
    let mut restarts = old.restart_count;
    let mut ready: Cond = ("False", String::new(), String::new());
    let mut running: Cond = ("False", String::new(), String::new());
    let bound = bound_condition(&name, o.claim);

    let source = source_of(dv);
    let (scheduled, in_progress) = source
        .as_ref()
        .map_or(("ImportScheduled", "ImportInProgress"), Source::phases);
    let clone_wait = match &source {
        Ok(Source::Clone(p)) => clone_source_wait(dv, p, o.source_claim),
        _ => None,
    };
    let phase = match o.claim {
        None if clone_wait.is_some() => {
            ready = clone_wait.clone().unwrap_or_default();
            "Pending"
        }
        None => match source.clone().and_then(|_| {
            for_data_volume_with(
                dv,
                o.config.filesystem_overhead,
                o.source_claim.and_then(claim_bytes),
                o.profile,
            )
            .map_err(|e| e.to_string())
        }) {
            Ok(claim) => {
                plan.create_claim = Some(claim);
                "Pending"
            }
            Err(message) => {
                ready = ("False", "InvalidSpec".into(), message);
                "Pending"
            }
        },
        Some(claim) if !controlled_by(claim, dv) => {
            if adoptable(dv, &name) && controller_of(claim).is_none() {
                plan.adopt_claim = true;
                // Adopted as populated: marked so, or the next sync (the claim now owned)
                // would run an importer over its data (a restored or pre-populated claim).
                plan.annotate_claim
                    .insert(POD_PHASE.into(), "Succeeded".into());
                progress = Some("N/A".into());
                ready = ("True", String::new(), String::new());
                "Succeeded"
            } else {
                ready = (
                    "False",
                    "ErrResourceExists".into(),
                    format!("Resource \"{name}\" already exists and is not managed by DataVolume"),
                );
                "Pending"
            }
        }
        Some(claim) if annotation(claim, POD_PHASE) == Some("Succeeded") => {
            plan.delete_pod = o.pod.is_some() && !retained(dv, claim);
            progress = Some(format(100.0));
            ready = ("True", String::new(), String::new());
            running = ("False", "Completed".into(), String::new());
            "Succeeded"
        }
        Some(claim) => match (o.pod, source) {
            (_, Err(message)) => {
                ready = ("False", "InvalidSpec".into(), message);
                "Pending"
            }
            (None, Ok(_)) if clone_wait.is_some() => {
                ready = clone_wait.clone().unwrap_or_default();
                "Pending"
            }
            (None, Ok(source)) => {
                let source_block = o.source_claim.is_some_and(|c| {
                    c.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block")
                });
                plan.create_pod = Some(pod_for(dv, &source, source_block, claim, o.config));
                running = ("False", "Pending".into(), String::new());
                scheduled
            }
            (Some(pod), Ok(_)) => {
                let seen = importer_state(pod);
                restarts = Some(seen.restarts);
                running = seen.running.clone();
                match seen.phase {
                    "Succeeded" => {
                        plan.annotate_claim
                            .insert(POD_PHASE.into(), "Succeeded".into());
                        plan.delete_pod = !retained(dv, claim);
                        progress = Some(format(100.0));
                        ready = ("True", String::new(), String::new());
                        running = ("False", "Completed".into(), String::new());
                    }
                    "InProgress" => {
                        if let Some(p) = o.progress {
                            progress = Some(format(p));
                        }
                    }
                    _ => {}
                }
                match seen.phase {
                    "Scheduled" => scheduled,
                    "InProgress" => in_progress,
                    other => other,
                }
            }
        },
    };

    let mut status = old.clone();
    status.phase = Some(phase.into());
    status.progress = progress.or_else(|| Some("N/A".into()));
    status.restart_count = restarts.or(Some(0));
    status.claim_name = o.claim.and_then(|c| c.metadata.name.clone()).or_else(|| {
        plan.create_claim
            .as_ref()
            .and_then(|c| c.metadata.name.clone())
    });
    status.conditions = Some(vec![
        condition(&old, "Bound", bound, o.now),
        condition(&old, "Ready", ready, o.now),
        condition(&old, "Running", running, o.now),
    ]);
    plan.status = status;
    plan
}

/// What the importer pod says.
struct ImporterState {
    phase: &'static str,
    running: Cond,
    restarts: i32,
}

fn importer_state(pod: &Pod) -> ImporterState {
    let status = pod.status.as_ref();
    let pod_phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    // The importer's (or upload server's) own container: not a node-pull import's `server`.
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.name != SERVER_CONTAINER)
                .or_else(|| c.first())
        });
    let restarts = container.map_or(0, |c| c.restart_count);
    let state = container.and_then(|c| c.state.as_ref());
    let last_failure = container
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .filter(|t| t.exit_code != 0);
    let failure_text = |t: &k8s_openapi::api::core::v1::ContainerStateTerminated| {
        t.message
            .clone()
            .filter(|m| !m.trim().is_empty())
            .or_else(|| t.reason.clone())
            .unwrap_or_else(|| format!("the importer exited with code {}", t.exit_code))
            .trim()
            .to_string()
    };
    let terminated = state.and_then(|s| s.terminated.as_ref());
    if pod_phase == "Succeeded" || terminated.is_some_and(|t| t.exit_code == 0) {
        return ImporterState {
            phase: "Succeeded",
            running: ("False", "Completed".into(), String::new()),
            restarts,
        };
    }
    if pod_phase == "Failed" {
        let message = terminated
            .or(last_failure)
            .map(failure_text)
            .or_else(|| status.and_then(|s| s.message.clone()))
            .unwrap_or_else(|| "the importer pod failed".into());
        return ImporterState {
            phase: "Failed",
            running: ("False", "Error".into(), message),
            restarts,
        };
    }
    // (The importer itself runs meanwhile, waiting for the server.)
    // A node-pull import's image that cannot be pulled or run, or its init container failing,
    // as upstream shows a waiting container: the reason (`ErrImagePull`...) and message.
    if let Some(trouble) = status.and_then(helper_trouble) {
        return ImporterState {
            phase: "Scheduled",
            running: ("False", trouble.0, trouble.1),
            restarts,
        };
    }
    if state.is_some_and(|s| s.running.is_some()) {
        return ImporterState {
            phase: "InProgress",
            running: ("True", String::new(), String::new()),
            restarts,
        };
    }
    // Waiting to start again after a failed run, or terminated and about to restart.
    if let Some(t) = terminated.filter(|t| t.exit_code != 0).or(last_failure) {
        return ImporterState {
            phase: "InProgress",
            running: ("False", "Error".into(), failure_text(t)),
            restarts,
        };
    }
    let waiting = state
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
        .unwrap_or_else(|| "Pending".into());
    ImporterState {
        phase: "Scheduled",
        running: ("False", waiting, String::new()),
        restarts,
    }
}

/// Why a helper container of the importer pod (the `init` container, a node-pull import's
/// `server`) keeps the import from running: waiting for a reason other than being created
/// (`ErrImagePull`, `ImagePullBackOff`, `CrashLoopBackOff`...; a crash names its last
/// termination message), or terminated with an error.
fn helper_trouble(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<(String, String)> {
    let helpers = status.init_container_statuses.iter().flatten().chain(
        status
            .container_statuses
            .iter()
            .flatten()
            .filter(|c| c.name == SERVER_CONTAINER),
    );
    for c in helpers {
        let state = c.state.as_ref();
        let failed = |t: &k8s_openapi::api::core::v1::ContainerStateTerminated| {
            let text = t
                .message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .or_else(|| t.reason.clone())
                .unwrap_or_else(|| format!("exited with code {}", t.exit_code));
            format!("{} container: {}", c.name, text.trim())
        };
        if let Some(t) = state
            .and_then(|s| s.terminated.as_ref())
            .filter(|t| t.exit_code != 0)
        {
            return Some(("Error".into(), failed(t)));
        }
        let Some(w) = state.and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.clone().unwrap_or_default();
        if matches!(
            reason.as_str(),
            "" | "ContainerCreating" | "PodInitializing"
        ) {
            continue;
        }
        let last = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .filter(|t| t.exit_code != 0);
        let message = match (reason.as_str(), last) {
            ("CrashLoopBackOff", Some(t)) => failed(t),
            _ => w.message.clone().unwrap_or_default(),
        };
        return Some((reason, message));
    }
    None
}

/// Why a clone cannot start yet, as the Ready condition: its source claim is missing, or is a
/// DataVolume's claim not populated yet.
fn clone_source_wait(
    dv: &DataVolume,
    source: &kubevirt_api::cdi::v1beta1::DataVolumeSourcePVC,
    claim: Option<&PersistentVolumeClaim>,
) -> Option<Cond> {
    let namespace = dv.metadata.namespace.as_deref().unwrap_or_default();
    let Some(claim) = claim else {
        return Some((
            "False",
            "CloneWithoutSource".into(),
            format!("source claim {namespace}/{} not found", source.name),
        ));
    };
    let of_data_volume = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DataVolume" && o.controller == Some(true));
    (of_data_volume && annotation(claim, POD_PHASE) != Some("Succeeded")).then(|| {
        (
            "False",
            "CloneSourceNotReady".into(),
            format!(
                "source claim {namespace}/{} is not populated yet",
                source.name
            ),
        )
    })
}

/// A claim's size: its capacity once bound, else its request.
fn claim_bytes(claim: &PersistentVolumeClaim) -> Option<u64> {
    let q = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .or_else(|| {
            claim
                .spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")
        })?;
    kubevirt_api::quantity::bytes_of(q).ok()
}

fn bound_condition(name: &str, claim: Option<&PersistentVolumeClaim>) -> Cond {
    let Some(claim) = claim else {
        return ("Unknown", "NotFound".into(), "No PVC found".into());
    };
    match claim.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Bound") => ("True", "Bound".into(), format!("PVC {name} Bound")),
        Some("Lost") => ("False", "ClaimLost".into(), "Claim Lost".into()),
        _ => ("False", "Pending".into(), format!("PVC {name} Pending")),
    }
}

/// The condition `type_` with `(status, reason, message)`; it keeps its transition time while
/// its status stays.
fn condition(
    old: &DataVolumeStatus,
    type_: &str,
    (status, reason, message): Cond,
    now: Timestamp,
) -> DataVolumeCondition {
    let since = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    DataVolumeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: (!reason.is_empty()).then_some(reason),
        message: (!message.is_empty()).then_some(message),
        last_transition_time: Some(since.clone()),
        last_heartbeat_time: Some(since),
    }
}

/// Annotation `key` of `claim`.
pub fn annotation<'a>(claim: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    claim
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn controller_of(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

fn controlled_by(claim: &PersistentVolumeClaim, dv: &DataVolume) -> bool {
    controller_of(claim).is_some() && controller_of(claim) == dv.metadata.uid.as_deref()
}

fn adoptable(dv: &DataVolume, name: &str) -> bool {
    let a = dv.metadata.annotations.as_ref();
    a.and_then(|a| a.get(ALLOW_CLAIM_ADOPTION))
        .is_some_and(|v| v == "true")
        || a.and_then(|a| a.get(PRE_POPULATED))
            .is_some_and(|v| v == name)
}

fn retained(dv: &DataVolume, claim: &PersistentVolumeClaim) -> bool {
    let on = |a: Option<&BTreeMap<String, String>>| {
        a.and_then(|a| a.get(RETAIN_POD))
            .is_some_and(|v| v == "true")
    };
    on(dv.metadata.annotations.as_ref()) || on(claim.metadata.annotations.as_ref())
}

#[cfg(test)]
mod tests;
