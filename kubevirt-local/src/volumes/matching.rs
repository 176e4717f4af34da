//! Whether a PersistentVolume can serve a claim, and which one of many the binder picks:
//! upstream's `findMatchingVolume` (class, capacity at least the request, access modes a
//! superset, the same volume mode, the claim's selector, the node's affinity; the smallest fit,
//! a volume pre-bound to the claim first).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::scheduler::placement::term_matches;
use crate::semantics::claims::milli;

/// The annotation older clients name a claim's class with.
const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// A claim's class (`""`: none).
pub fn claim_class(claim: &PersistentVolumeClaim) -> String {
    claim
        .annotations()
        .get(BETA_CLASS_ANNOTATION)
        .cloned()
        .or_else(|| {
            claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
        })
        .unwrap_or_default()
}

/// A volume's class (`""`: none).
pub fn volume_class(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn quantity(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<i128> {
    milli(&serde_json::Value::String(q?.0.clone()))
}

/// The claim's requested storage, in thousandths.
pub fn claim_request(claim: &PersistentVolumeClaim) -> Option<i128> {
    quantity(
        claim
            .spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage"),
    )
}

/// The volume's capacity, in thousandths.
pub fn volume_capacity(pv: &PersistentVolume) -> Option<i128> {
    quantity(pv.spec.as_ref()?.capacity.as_ref()?.get("storage"))
}

fn volume_mode(m: Option<&String>) -> &str {
    m.map(String::as_str).unwrap_or("Filesystem")
}

/// Does `selector` select `labels` (an absent selector selects everything)?
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(s) = selector else { return true };
    let by_label = s
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = s.match_expressions.iter().flatten().all(|e| {
        let have = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => have.is_none_or(|h| !values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    by_label && by_expr
}

/// Does the volume's node affinity admit `node` (no affinity admits every node)?
pub fn admits_node(pv: &PersistentVolume, node: &Node) -> bool {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node))
}

/// Why `pv` cannot serve `claim` (size, modes, class, selector), or `None` when it can.
pub fn mismatch(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> Option<String> {
    let (Some(pspec), Some(cspec)) = (pv.spec.as_ref(), claim.spec.as_ref()) else {
        return Some("the volume or the claim has no spec".into());
    };
    if volume_class(pv) != claim_class(claim) {
        return Some("storageClassName does not match".into());
    }
    match (volume_capacity(pv), claim_request(claim)) {
        (Some(have), Some(want)) if have >= want => {}
        _ => return Some("requested PV is too small".into()),
    }
    let modes = pspec.access_modes.as_deref().unwrap_or_default();
    if !cspec
        .access_modes
        .iter()
        .flatten()
        .all(|m| modes.contains(m))
    {
        return Some("incompatible accessMode".into());
    }
    if volume_mode(pspec.volume_mode.as_ref()) != volume_mode(cspec.volume_mode.as_ref()) {
        return Some("incompatible volumeMode".into());
    }
    if !selects(cspec.selector.as_ref(), pv.labels()) {
        return Some("the volume's labels do not match the claim's selector".into());
    }
    None
}

/// Is `pv`'s claimRef this claim (by namespace and name, and uid when it has one)?
pub fn prebound_to(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name.as_deref() == claim.metadata.name.as_deref()
        && r.namespace.as_deref() == claim.metadata.namespace.as_deref()
        && r.uid
            .as_deref()
            .is_none_or(|u| Some(u) == claim.metadata.uid.as_deref())
}

/// The volume the binder gives `claim` among `volumes`: one pre-bound to it if it fits, else the
/// smallest unclaimed Available fit (ties: the first name). With `node`, only volumes whose
/// affinity admits it.
pub fn best_match<'a>(
    volumes: &'a [PersistentVolume],
    claim: &PersistentVolumeClaim,
    node: Option<&Node>,
) -> Option<&'a PersistentVolume> {
    let usable = |pv: &&PersistentVolume| {
        pv.metadata.deletion_timestamp.is_none()
            && mismatch(pv, claim).is_none()
            && node.is_none_or(|n| admits_node(pv, n))
    };
    if let Some(pv) = volumes
        .iter()
        .filter(usable)
        .find(|pv| prebound_to(pv, claim))
    {
        return Some(pv);
    }
    volumes
        .iter()
        .filter(usable)
        .filter(|pv| pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()))
        .filter(|pv| {
            let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Released" | "Failed"))
        })
        .min_by(|a, b| {
            volume_capacity(a)
                .cmp(&volume_capacity(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn pv(
        name: &str,
        size: &str,
        modes: &[&str],
        class: &str,
        labels: serde_json::Value,
    ) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
            "spec": {"capacity": {"storage": size}, "accessModes": modes,
                     "storageClassName": class, "hostPath": {"path": "/tmp"}},
            "status": {"phase": "Available"}}))
        .unwrap()
    }

    fn claim(
        size: &str,
        modes: &[&str],
        class: &str,
        selector: serde_json::Value,
    ) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "c", "namespace": "default", "uid": "u1"},
            "spec": {"accessModes": modes, "storageClassName": class, "selector": selector,
                     "resources": {"requests": {"storage": size}}}}),
        )
        .unwrap()
    }

    #[test]
    fn picks_the_smallest_fit() {
        let vols = [
            pv("big", "10Gi", &["ReadWriteOnce"], "", json!({})),
            pv("small", "1Gi", &["ReadWriteOnce"], "", json!({})),
            pv(
                "fit",
                "2Gi",
                &["ReadWriteOnce", "ReadOnlyMany"],
                "",
                json!({}),
            ),
            pv("other-class", "2Gi", &["ReadWriteOnce"], "fast", json!({})),
        ];
        let c = claim("1500Mi", &["ReadWriteOnce"], "", json!(null));
        assert_eq!(
            best_match(&vols, &c, None)
                .map(ResourceExt::name_any)
                .as_deref(),
            Some("fit")
        );
        let rox = claim("1Gi", &["ReadOnlyMany"], "", json!(null));
        assert_eq!(
            best_match(&vols, &rox, None)
                .map(ResourceExt::name_any)
                .as_deref(),
            Some("fit")
        );
        let sel = claim(
            "1Gi",
            &["ReadWriteOnce"],
            "",
            json!({"matchLabels": {"tier": "gold"}}),
        );
        assert!(best_match(&vols, &sel, None).is_none());
    }

    #[test]
    fn a_volume_prebound_to_the_claim_wins() {
        let mut pre = pv("pre", "10Gi", &["ReadWriteOnce"], "", json!({}));
        pre.spec.as_mut().unwrap().claim_ref = Some(
            serde_json::from_value(json!({"namespace": "default", "name": "c", "uid": "u1"}))
                .unwrap(),
        );
        let mut elsewhere = pv("elsewhere", "1Gi", &["ReadWriteOnce"], "", json!({}));
        elsewhere.spec.as_mut().unwrap().claim_ref =
            Some(serde_json::from_value(json!({"namespace": "default", "name": "other"})).unwrap());
        let vols = [
            pv("fit", "1Gi", &["ReadWriteOnce"], "", json!({})),
            pre,
            elsewhere,
        ];
        let c = claim("1Gi", &["ReadWriteOnce"], "", json!(null));
        assert_eq!(
            best_match(&vols, &c, None)
                .map(ResourceExt::name_any)
                .as_deref(),
            Some("pre")
        );
    }

    #[test]
    fn node_affinity_limits_the_choice() {
        let mut local = pv("local", "1Gi", &["ReadWriteOnce"], "", json!({}));
        local.spec.as_mut().unwrap().node_affinity = Some(
            serde_json::from_value(json!({"required":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname",
              "operator": "In", "values": ["a"]}]}]}}))
            .unwrap(),
        );
        let node = |n: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": n,
                "labels": {"kubernetes.io/hostname": n}}}))
            .unwrap()
        };
        let vols = [local];
        let c = claim("1Gi", &["ReadWriteOnce"], "", json!(null));
        assert!(best_match(&vols, &c, Some(&node("a"))).is_some());
        assert!(best_match(&vols, &c, Some(&node("b"))).is_none());
    }

    const TIERS: [&str; 2] = ["gold", "silver"];
    const MODES: [&str; 3] = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"];

    fn modes(mask: u8) -> Vec<&'static str> {
        MODES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, m)| *m)
            .collect()
    }

    proptest! {
        /// Whatever the volumes and the claim, the chosen volume satisfies the claim, and no
        /// other unclaimed volume that satisfies it is smaller.
        #[test]
        fn the_choice_fits_and_is_smallest(
            vols in proptest::collection::vec((1u32..64, 0u8..8, 0usize..2, 0usize..2), 0..8),
            want in 1u32..64, want_modes in 1u8..8, class in 0usize..2, gold in any::<bool>(),
        ) {
            let classes = ["", "fast"];
            let volumes: Vec<PersistentVolume> = vols.iter().enumerate().map(|(i, (size, m, c, l))| {
                pv(&format!("pv{i}"), &format!("{size}Gi"), &modes(*m), classes[*c],
                   json!({"tier": TIERS[*l]}))
            }).collect();
            let selector = if gold { json!({"matchLabels": {"tier": "gold"}}) } else { json!(null) };
            let c = claim(&format!("{want}Gi"), &modes(want_modes), classes[class], selector);
            match best_match(&volumes, &c, None) {
                Some(chosen) => {
                    prop_assert_eq!(mismatch(chosen, &c), None);
                    prop_assert!(volume_capacity(chosen) >= claim_request(&c));
                    for other in &volumes {
                        if mismatch(other, &c).is_none() {
                            prop_assert!(volume_capacity(other) >= volume_capacity(chosen));
                        }
                    }
                }
                None => prop_assert!(volumes.iter().all(|v| mismatch(v, &c).is_some())),
            }
        }
    }
}
