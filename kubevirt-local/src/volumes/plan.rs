//! The binder's decisions, as a pure function of what the cluster holds: upstream's PV
//! controller (`syncClaim`/`syncVolume`) reduced to the cases a local cluster meets. The
//! [runner](super::run) carries the actions out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;

pub use super::action::{Action, ClaimId, Severity};
use super::matching::{best_match, claim_class, mismatch, prebound_to};
use super::protection::{claim_releasable, volume_releasable};

/// Set on a claim once the binder has bound it.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on whichever side the binder chose (a claim's volume, a volume's claim).
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The node the scheduler chose for a claim waiting for its first consumer.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner that is to make a claim's volume.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Its older spelling, still written (external provisioners read either).
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The provisioner of classes whose volumes only an administrator makes.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The annotation older clients name a claim's class with.
const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// The default class: of those annotated default, the newest (ties: the first name).
fn default_class(classes: &[StorageClass]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            let a = c.annotations();
            [
                crate::server::printers::DEFAULT_CLASS_ANNOTATION,
                crate::server::printers::BETA_DEFAULT_CLASS_ANNOTATION,
            ]
            .iter()
            .any(|k| a.get(*k).map(String::as_str) == Some("true"))
        })
        .max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .then_with(|| b.name_any().cmp(&a.name_any()))
        })
        .map(|c| c.name_any())
}

/// What the binder sees.
#[derive(Debug, Clone, Copy)]
pub struct World<'a> {
    /// Every claim.
    pub claims: &'a [PersistentVolumeClaim],
    /// Every volume.
    pub volumes: &'a [PersistentVolume],
    /// Every StorageClass.
    pub classes: &'a [StorageClass],
    /// Every node.
    pub nodes: &'a [Node],
    /// Every pod (the claims' users).
    pub pods: &'a [Pod],
}

fn event(
    claim: &PersistentVolumeClaim,
    severity: Severity,
    reason: &'static str,
    message: String,
) -> Action {
    Action::Event {
        claim: ClaimId::of(claim),
        severity,
        reason,
        message,
    }
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn volume_name(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

/// Are claim and volume bound on both sides, with every mark set?
fn fully_bound(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let uid_matches = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| r.uid.is_some() && r.uid == claim.metadata.uid);
    let capacity_set = claim
        .status
        .as_ref()
        .is_some_and(|s| s.capacity.is_some() && s.access_modes.is_some());
    uid_matches
        && phase_of_volume(pv) == "Bound"
        && volume_name(claim) == pv.name_any()
        && claim.annotations().get(BIND_COMPLETED).map(String::as_str) == Some("yes")
        && phase_of_claim(claim) == "Bound"
        && capacity_set
}

/// The node named `name`, or a stand-in labelled with its hostname when no Node says more.
fn node_named(nodes: &[Node], name: &str) -> Node {
    nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .cloned()
        .unwrap_or_else(|| Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/hostname".to_string(),
                    name.to_string(),
                )])),
                ..Default::default()
            },
            ..Default::default()
        })
}

fn bind(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> Action {
    Action::Bind {
        volume: pv.name_any(),
        claim: ClaimId::of(claim),
        chose_volume: volume_name(claim).is_empty(),
        chose_claim: pv.spec.as_ref().is_none_or(|s| s.claim_ref.is_none()),
    }
}

/// What to do about one claim.
fn sync_claim(w: &World<'_>, claim: &PersistentVolumeClaim) -> Vec<Action> {
    let named = volume_name(claim);
    let completed = claim.annotations().get(BIND_COMPLETED).is_some();
    if !named.is_empty() {
        let Some(pv) = w.volumes.iter().find(|v| v.name_any() == named) else {
            return if completed && phase_of_claim(claim) != "Lost" {
                vec![Action::Lost(ClaimId::of(claim))]
            } else {
                vec![]
            };
        };
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if claim_ref.is_some() && !prebound_to(pv, claim) {
            // The volume holds another claim.
            return if completed && phase_of_claim(claim) != "Lost" {
                vec![Action::Lost(ClaimId::of(claim))]
            } else {
                vec![]
            };
        }
        if fully_bound(pv, claim) {
            return vec![];
        }
        if !completed && let Some(why) = mismatch(pv, claim) {
            return vec![event(
                claim,
                Severity::Warning,
                "VolumeMismatch",
                format!("Cannot bind to requested volume \"{named}\": {why}"),
            )];
        }
        return vec![bind(pv, claim)];
    }
    if claim.metadata.deletion_timestamp.is_some() {
        return vec![];
    }
    let class_name = claim_class(claim);
    let class = w.classes.iter().find(|c| c.name_any() == class_name);
    let delayed =
        class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer");
    let selected = claim.annotations().get(SELECTED_NODE);
    if delayed && selected.is_none() {
        // A volume pre-bound to the claim is still taken at once.
        if let Some(pv) = w
            .volumes
            .iter()
            .find(|v| prebound_to(v, claim) && mismatch(v, claim).is_none())
        {
            return vec![bind(pv, claim)];
        }
        return vec![event(
            claim,
            Severity::Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        )];
    }
    let node = selected.map(|n| node_named(w.nodes, n));
    if let Some(pv) = best_match(w.volumes, claim, node.as_ref()) {
        return vec![bind(pv, claim)];
    }
    let unset = claim
        .spec
        .as_ref()
        .is_some_and(|s| s.storage_class_name.is_none())
        && !claim.annotations().contains_key(BETA_CLASS_ANNOTATION);
    if unset && let Some(default) = default_class(w.classes) {
        // A default class that came after the claim (retroactive default StorageClass).
        return vec![Action::AssignClass {
            claim: ClaimId::of(claim),
            class: default,
        }];
    }
    if class_name.is_empty() {
        return vec![event(
            claim,
            Severity::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        )];
    }
    let Some(class) = class else {
        return vec![event(
            claim,
            Severity::Warning,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        )];
    };
    if class.provisioner == NO_PROVISIONER {
        return vec![];
    }
    let provisioner = class.provisioner.clone();
    let annotated = claim.annotations().get(STORAGE_PROVISIONER) == Some(&provisioner)
        && claim.annotations().get(BETA_STORAGE_PROVISIONER) == Some(&provisioner);
    let mut out = Vec::new();
    if !annotated {
        out.push(Action::Provision {
            claim: ClaimId::of(claim),
            provisioner: provisioner.clone(),
        });
    }
    out.push(event(
        claim,
        Severity::Normal,
        "ExternalProvisioning",
        format!(
            "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
        ),
    ));
    out
}

/// What to do about one volume (its claim's side is [`sync_claim`]'s).
fn sync_volume(w: &World<'_>, pv: &PersistentVolume) -> Vec<Action> {
    let phase = phase_of_volume(pv);
    let name = pv.name_any();
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return (phase != "Available")
            .then_some(Action::Available(name))
            .into_iter()
            .collect();
    };
    let claim = w
        .claims
        .iter()
        .find(|c| c.metadata.name == claim_ref.name && c.metadata.namespace == claim_ref.namespace);
    let Some(uid) = claim_ref.uid.as_deref() else {
        // Pre-bound by name to a claim that may come later.
        return (!matches!(phase, "Available" | "Bound"))
            .then_some(Action::Available(name))
            .into_iter()
            .collect();
    };
    match claim {
        Some(c) if c.metadata.uid.as_deref() == Some(uid) => {
            let held = volume_name(c);
            if held.is_empty() || held == name {
                // The claim's side binds it.
                return vec![];
            }
            // The claim holds another volume.
            let by_us = pv
                .annotations()
                .get(BOUND_BY_CONTROLLER)
                .map(String::as_str)
                == Some("yes");
            if by_us {
                vec![Action::Unbind(name)]
            } else if !matches!(phase, "Released" | "Failed") {
                vec![Action::Released(name)]
            } else {
                vec![]
            }
        }
        _ if matches!(phase, "Released" | "Failed") => vec![],
        _ => vec![Action::Released(name)],
    }
}

/// Everything to do now, claims first (a bind settles both sides), each action once.
pub fn plan(w: &World<'_>) -> Vec<Action> {
    let mut out: Vec<Action> = Vec::new();
    for c in w.claims {
        for a in sync_claim(w, c) {
            // Two claims may pick the same volume in one pass: the first (oldest name order) wins.
            if let Action::Bind { volume, .. } = &a
                && out
                    .iter()
                    .any(|o| matches!(o, Action::Bind { volume: v, .. } if v == volume))
            {
                continue;
            }
            out.push(a);
        }
    }
    for v in w.volumes {
        out.extend(sync_volume(w, v));
    }
    out.extend(
        w.claims
            .iter()
            .filter(|c| claim_releasable(c, w.pods))
            .map(|c| Action::UnprotectClaim(ClaimId::of(c))),
    );
    out.extend(
        w.volumes
            .iter()
            .filter(|v| volume_releasable(v))
            .map(|v| Action::UnprotectVolume(v.name_any())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn claim(name: &str, class: &str, extra: Value) -> PersistentVolumeClaim {
        let mut c = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        json_patch::merge(&mut c, &extra);
        serde_json::from_value(c).unwrap()
    }

    fn volume(name: &str, class: &str, size: &str, extra: Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": class, "hostPath": {"path": "/x"}},
            "status": {"phase": "Available"}});
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).unwrap()
    }

    fn class(name: &str, mode: &str) -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": name},
            "provisioner": "kubevirt-rs.io/local-volume", "volumeBindingMode": mode}))
        .unwrap()
    }

    fn plan_of(
        claims: &[PersistentVolumeClaim],
        volumes: &[PersistentVolume],
        classes: &[StorageClass],
    ) -> Vec<Action> {
        plan(&World {
            claims,
            volumes,
            classes,
            nodes: &[],
            pods: &[],
        })
    }

    fn claimed_by(name: &str) -> Value {
        json!({"spec": {"claimRef": {"namespace": "default", "name": name, "uid": format!("uid-{name}")}}})
    }

    fn id(name: &str) -> ClaimId {
        ClaimId {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    #[test]
    fn static_binding_chooses_both_sides() {
        let actions = plan_of(
            &[claim("c", "", json!({}))],
            &[volume("pv", "", "2Gi", json!({}))],
            &[],
        );
        assert_eq!(
            actions,
            [Action::Bind {
                volume: "pv".into(),
                claim: id("c"),
                chose_volume: true,
                chose_claim: true
            }]
        );
    }

    #[test]
    fn a_provisioned_volume_binds_its_claim_and_then_nothing_is_left() {
        let classes = [class("local", "WaitForFirstConsumer")];
        let waiting = claim(
            "c",
            "local",
            json!({"metadata": {"annotations": {SELECTED_NODE: "n"}}}),
        );
        let pv = volume("pvc-uid-c", "local", "1Gi", claimed_by("c"));
        assert_eq!(
            plan_of(
                std::slice::from_ref(&waiting),
                std::slice::from_ref(&pv),
                &classes
            ),
            [Action::Bind {
                volume: "pvc-uid-c".into(),
                claim: id("c"),
                chose_volume: true,
                chose_claim: false
            }]
        );
        let bound_claim = claim(
            "c",
            "local",
            json!({"metadata": {"annotations": {BIND_COMPLETED: "yes"}},
            "spec": {"volumeName": "pvc-uid-c"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}),
        );
        let bound_pv = volume(
            "pvc-uid-c",
            "local",
            "1Gi",
            json!({"spec": claimed_by("c")["spec"], "status": {"phase": "Bound"}}),
        );
        assert_eq!(plan_of(&[bound_claim], &[bound_pv], &classes), []);
    }

    #[test]
    fn waiting_and_provisioning() {
        let classes = [
            class("local", "WaitForFirstConsumer"),
            class("now", "Immediate"),
        ];
        let actions = plan_of(&[claim("c", "local", json!({}))], &[], &classes);
        assert!(
            matches!(
                &actions[..],
                [Action::Event {
                    reason: "WaitForFirstConsumer",
                    ..
                }]
            ),
            "{actions:?}"
        );
        let selected = claim(
            "c",
            "local",
            json!({"metadata": {"annotations": {SELECTED_NODE: "n"}}}),
        );
        let actions = plan_of(&[selected], &[], &classes);
        assert!(
            matches!(&actions[..], [Action::Provision { provisioner, .. }, Action::Event { reason: "ExternalProvisioning", .. }]
            if provisioner == "kubevirt-rs.io/local-volume"),
            "{actions:?}"
        );
        let annotated = claim(
            "d",
            "now",
            json!({"metadata": {"annotations": {
            STORAGE_PROVISIONER: "kubevirt-rs.io/local-volume", BETA_STORAGE_PROVISIONER: "kubevirt-rs.io/local-volume"}}}),
        );
        let actions = plan_of(&[annotated], &[], &classes);
        assert!(
            matches!(
                &actions[..],
                [Action::Event {
                    reason: "ExternalProvisioning",
                    ..
                }]
            ),
            "{actions:?}"
        );
        let missing = plan_of(&[claim("e", "gone", json!({}))], &[], &classes);
        assert!(
            matches!(&missing[..], [Action::Event { reason: "ProvisioningFailed", message, .. }]
            if message == "storageclass.storage.k8s.io \"gone\" not found"),
            "{missing:?}"
        );
    }

    #[test]
    fn a_claim_without_a_class_gets_a_later_default() {
        let mut default = class("late", "Immediate");
        default.metadata.annotations = Some(
            [(
                "storageclass.kubernetes.io/is-default-class".to_string(),
                "true".to_string(),
            )]
            .into(),
        );
        let classless: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "default", "uid": "uid-c"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap();
        assert_eq!(
            plan_of(
                std::slice::from_ref(&classless),
                &[],
                std::slice::from_ref(&default)
            ),
            [Action::AssignClass {
                claim: id("c"),
                class: "late".into()
            }]
        );
        // An empty class asks for none.
        let actions = plan_of(&[claim("c", "", json!({}))], &[], &[default]);
        assert!(
            matches!(
                &actions[..],
                [Action::Event {
                    reason: "FailedBinding",
                    ..
                }]
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn released_and_lost() {
        let orphan = volume(
            "pv",
            "",
            "1Gi",
            json!({"spec": claimed_by("gone")["spec"], "status": {"phase": "Bound"}}),
        );
        assert_eq!(
            plan_of(&[], std::slice::from_ref(&orphan), &[]),
            [Action::Released("pv".into())]
        );
        // A claim of the same name but another uid is not the volume's claim.
        let namesake = claim("gone", "", json!({"metadata": {"uid": "other"}}));
        assert!(
            plan_of(
                std::slice::from_ref(&namesake),
                std::slice::from_ref(&orphan),
                &[]
            )
            .contains(&Action::Released("pv".into()))
        );
        let released = volume(
            "pv",
            "",
            "1Gi",
            json!({"spec": claimed_by("gone")["spec"], "status": {"phase": "Released"}}),
        );
        assert_eq!(plan_of(&[], &[released], &[]), []);
        let lost = claim(
            "c",
            "",
            json!({"metadata": {"annotations": {BIND_COMPLETED: "yes"}},
            "spec": {"volumeName": "vanished"}, "status": {"phase": "Bound"}}),
        );
        assert_eq!(plan_of(&[lost], &[], &[]), [Action::Lost(id("c"))]);
    }

    proptest! {
        /// Whatever the claims and volumes, no volume is bound twice in a pass, and every
        /// volume the binder chooses for a claim satisfies it.
        #[test]
        fn binds_are_unique_and_fit(
            claims in proptest::collection::vec((1u32..8, 0usize..2), 0..6),
            volumes in proptest::collection::vec((1u32..8, 0usize..2), 0..6),
        ) {
            let classes = ["", "fast"];
            let claims: Vec<_> = claims.iter().enumerate().map(|(i, (size, c))| {
                claim(&format!("c{i}"), classes[*c], json!({"spec": {"resources": {"requests": {"storage": format!("{size}Gi")}}}}))
            }).collect();
            let vols: Vec<_> = volumes.iter().enumerate().map(|(i, (size, c))| {
                volume(&format!("pv{i}"), classes[*c], &format!("{size}Gi"), json!({}))
            }).collect();
            let actions = plan_of(&claims, &vols, &[]);
            let mut seen = std::collections::HashSet::new();
            for a in &actions {
                if let Action::Bind { volume, claim: cid, .. } = a {
                    prop_assert!(seen.insert(volume.clone()), "{} bound twice", volume);
                    let c = claims.iter().find(|c| c.name_any() == cid.name).unwrap();
                    let v = vols.iter().find(|v| v.name_any() == *volume).unwrap();
                    prop_assert_eq!(mismatch(v, c), None);
                }
            }
        }
    }
}
