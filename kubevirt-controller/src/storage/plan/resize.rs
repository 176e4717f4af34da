//! The resizer's decision (upstream's external-resizer, for local volumes): a bound claim asking
//! for more than its PV holds grows, if its class allows expansion and, for Block, the node's
//! disk has the room; a claim whose status lags behind its grown PV catches up.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

use super::{Action, Observed, RESIZE_CONDITIONS, RESIZE_FAILED, claim_ref};
use crate::storage::claim::{self, VolumeMode, human};
use crate::storage::disk::Volume;

/// The resize decision for claim `c`, bound to our PV `v`.
pub(super) fn resize(
    seen: Observed<'_>,
    c: &PersistentVolumeClaim,
    v: &PersistentVolume,
) -> Option<Action> {
    let spec = v.spec.as_ref()?;
    let claimed_by = spec.claim_ref.as_ref().and_then(|r| r.uid.as_deref());
    if claimed_by.is_none() || claimed_by != c.metadata.uid.as_deref() {
        return None;
    }
    let name = v.metadata.name.clone()?;
    let pv_capacity = spec.capacity.as_ref()?.get("storage")?;
    let pv_bytes = kubevirt_api::quantity::bytes_of(pv_capacity).ok()?;
    let refuse = |message: String| {
        Some(Action::Refuse {
            claim: claim_ref(c),
            reason: RESIZE_FAILED,
            message,
        })
    };
    let (wanted, bytes) = match claim::requested(c) {
        Ok(r) => r,
        Err(e) => return refuse(e.to_string()),
    };
    if bytes > pv_bytes {
        let class_name = spec.storage_class_name.as_deref().unwrap_or("");
        let class = seen
            .classes
            .iter()
            .find(|k| k.metadata.name.as_deref() == Some(class_name));
        let allowed = class.is_some_and(|k| k.allow_volume_expansion == Some(true));
        if !allowed {
            return refuse(format!(
                "spec.resources.requests.storage: {} is more than the volume's {}, and the StorageClass {class_name:?} does not allow expansion (allowVolumeExpansion)",
                wanted.0, pv_capacity.0
            ));
        }
        let mode = VolumeMode::parse(spec.volume_mode.as_deref()).ok()?;
        if mode == VolumeMode::Block && bytes - pv_bytes > seen.disk.free_bytes {
            return refuse(format!(
                "spec.resources.requests.storage: growing {name} from {} to {} needs {} more, but its node has {} free",
                pv_capacity.0,
                wanted.0,
                human(bytes - pv_bytes),
                human(seen.disk.free_bytes)
            ));
        }
        return Some(Action::Grow {
            claim: claim_ref(c),
            volume: Volume { name, mode, bytes },
            claim_status: resized_status(c, &wanted),
            capacity: wanted,
        });
    }
    // A grown PV whose claim's status still shows the old capacity (the claim's write failed
    // after the PV's). Before the binder writes a capacity at all, the claim is not ours.
    let shown = c
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref()?.get("storage"))
        .and_then(|q| kubevirt_api::quantity::bytes_of(q).ok())?;
    (shown < pv_bytes).then(|| Action::SetClaimCapacity {
        claim: claim_ref(c),
        claim_status: resized_status(c, pv_capacity),
    })
}

/// The claim status patch of a finished resize: the new capacity (and allocated size), the
/// resize conditions gone.
fn resized_status(c: &PersistentVolumeClaim, capacity: &Quantity) -> Value {
    let conditions: Vec<_> = c
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|k| !RESIZE_CONDITIONS.contains(&k.type_.as_str()))
        .collect();
    json!({"status": {
        "capacity": {"storage": capacity},
        "allocatedResources": {"storage": capacity},
        "allocatedResourceStatuses": null,
        "conditions": if conditions.is_empty() { Value::Null } else { json!(conditions) },
    }})
}
