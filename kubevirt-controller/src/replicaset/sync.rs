//! One sync of a VirtualMachineInstanceReplicaSet as a pure function (upstream's
//! `pkg/virt-controller/watch/replicaset`): which VMIs to adopt, release, delete and how many to
//! create, and the status that follows.
//!
//! Like apps/v1 ReplicaSet: VMIs matching the selector without a controller are adopted, owned
//! VMIs that stop matching are released; finished VMIs are deleted and so replaced ("cattle");
//! at most [`BURST_REPLICAS`] creates or deletes per sync; `spec.paused` stops both.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::core::v1::{
    VirtualMachineInstance, VirtualMachineInstanceReplicaSet,
    VirtualMachineInstanceReplicaSetCondition, VirtualMachineInstanceReplicaSetStatus,
};
use kubevirt_api::labels::{selector_is_empty, selector_matches, selector_string};

use crate::vm::instance::{condition, ever_ran, is_deleting, is_final, uid};

/// Most creates or deletes one sync issues (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 250;

/// What one sync does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// VMIs (by name) to take as the set's own: they match and have no controller.
    pub adopt: Vec<String>,
    /// Owned VMIs (by name) that no longer match: drop the owner reference.
    pub release: Vec<String>,
    /// VMIs to delete, (name, uid): finished ones, and the surplus when scaling down.
    pub delete: Vec<(String, String)>,
    /// How many VMIs to create from the template.
    pub create: usize,
    /// A finished VMI never ran: wait before replacing it (sync again after this long).
    pub backoff: bool,
    /// The status to write.
    pub status: VirtualMachineInstanceReplicaSetStatus,
    /// Why the set is not acted on (its selector cannot select its own template).
    pub ignored: Option<String>,
}

/// Whether `vmi` is controlled by the object with UID `owner`.
pub fn controlled_by(vmi: &VirtualMachineInstance, owner: &str) -> bool {
    vmi.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner)
}

fn has_controller(vmi: &VirtualMachineInstance) -> bool {
    vmi.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true))
}

/// Plans one sync of `rs` given every VMI of its namespace.
pub fn plan(
    rs: &VirtualMachineInstanceReplicaSet,
    vmis: &[VirtualMachineInstance],
    now: Timestamp,
) -> Plan {
    let mut p = Plan {
        status: rs.status.clone().unwrap_or_default(),
        ..Plan::default()
    };
    let selector = &rs.spec.selector;
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if selector_is_empty(selector)
        || template_labels.is_empty()
        || !selector_matches(selector, &template_labels)
    {
        p.ignored = Some(
            "spec.selector must be non-empty and match spec.template.metadata.labels".to_string(),
        );
        return p;
    }
    let rs_uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let mut owned: Vec<&VirtualMachineInstance> = Vec::new();
    for v in vmis {
        let labels = v.metadata.labels.clone().unwrap_or_default();
        let matches = selector_matches(selector, &labels);
        let name = v.metadata.name.clone().unwrap_or_default();
        if controlled_by(v, rs_uid) {
            if matches {
                owned.push(v);
            } else if !is_deleting(v) {
                p.release.push(name);
            }
        } else if matches && !has_controller(v) && !is_deleting(v) {
            p.adopt.push(name);
            owned.push(v);
        }
    }
    let finished: Vec<&VirtualMachineInstance> = owned
        .iter()
        .copied()
        .filter(|v| is_final(v) && !is_deleting(v))
        .collect();
    let mut active: Vec<&VirtualMachineInstance> = owned
        .iter()
        .copied()
        .filter(|v| !is_final(v) && !is_deleting(v))
        .collect();
    let paused = rs.spec.paused == Some(true);
    let replicas = usize::try_from(rs.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if !paused {
        for v in finished.iter().take(BURST_REPLICAS) {
            p.delete.push((
                v.metadata.name.clone().unwrap_or_default(),
                uid(v).to_string(),
            ));
        }
        // A VMI that failed without ever running would fail again at once: replace it later.
        p.backoff = finished.iter().any(|v| !ever_ran(v));
        if active.len() < replicas && !p.backoff {
            p.create =
                (replicas - active.len()).min(BURST_REPLICAS - p.delete.len().min(BURST_REPLICAS));
        } else if active.len() > replicas {
            // Scale down: the least useful first (not ready, then the newest).
            active.sort_by_key(|v| {
                let ready = condition(v, "Ready").is_some_and(|(s, _)| s == "True");
                let created = v.metadata.creation_timestamp.as_ref().map(|t| t.0);
                (ready, std::cmp::Reverse(created))
            });
            let surplus = (active.len() - replicas).min(BURST_REPLICAS);
            for v in active.drain(..surplus) {
                p.delete.push((
                    v.metadata.name.clone().unwrap_or_default(),
                    uid(v).to_string(),
                ));
            }
        }
    }
    let ready = active
        .iter()
        .filter(|v| condition(v, "Ready").is_some_and(|(s, _)| s == "True"))
        .count();
    p.status.replicas = Some(active.len() as i32);
    p.status.ready_replicas = Some(ready as i32);
    p.status.label_selector = Some(selector_string(selector));
    let mut conditions: Vec<VirtualMachineInstanceReplicaSetCondition> = p
        .status
        .conditions
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "ReplicaPaused")
        .collect();
    if paused {
        let since = rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "ReplicaPaused"))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        conditions.push(VirtualMachineInstanceReplicaSetCondition {
            type_: "ReplicaPaused".into(),
            status: "True".into(),
            reason: Some("Paused".into()),
            message: Some("spec.paused: no VMI is created or deleted".into()),
            last_transition_time: Some(since),
            last_probe_time: None,
        });
    }
    p.status.conditions = (!conditions.is_empty()).then_some(conditions);
    p
}

#[cfg(test)]
mod tests;
