//! The common snapshot controller's decisions (upstream's `snapshot-controller`), as a pure
//! function of the VolumeSnapshots, their contents and classes, and the claims and volumes.
//!
//! - A dynamic snapshot (`source.persistentVolumeClaimName`): the claim must exist and be bound;
//!   its PV names the driver and the volume handle (a CSI PV's, or for a PV an external
//!   provisioner made, `pv.kubernetes.io/provisioned-by` and the PV's name); the class is the
//!   one named or the driver's single default (then written on the snapshot, as upstream). The
//!   content `snapcontent-<snapshot uid>` gets the class's driver and deletion policy.
//! - A pre-provisioned snapshot (`source.volumeSnapshotContentName`): the content must exist
//!   and name this snapshot; its `volumeSnapshotRef.uid` is filled in.
//! - Either way the snapshot's status names the content and mirrors its readiness, size,
//!   creation time and error; failures are the status's `error` and a warning event.
//! - Finalizers: `volumesnapshot-as-source-protection` always, `volumesnapshot-bound-protection`
//!   once bound. A snapshot being deleted keeps them while a Pending claim restores from it;
//!   then a bound content with policy Delete is deleted (annotated being-deleted first) and the
//!   finalizers go; Retain keeps the content.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kubevirt_api::volumesnapshot::v1::{
    VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent, VolumeSnapshotContentSource,
    VolumeSnapshotContentSpec, VolumeSnapshotStatus,
};
use kubevirt_api::volumesnapshot::{
    SNAPSHOT_AS_SOURCE_PROTECTION, SNAPSHOT_BOUND_PROTECTION, content_name_for,
};

/// The annotation naming who provisioned a PV.
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// What the controller sees.
#[derive(Clone, Copy, Debug)]
pub struct World<'a> {
    /// Every VolumeSnapshot.
    pub snapshots: &'a [VolumeSnapshot],
    /// Every VolumeSnapshotContent.
    pub contents: &'a [VolumeSnapshotContent],
    /// Every VolumeSnapshotClass.
    pub classes: &'a [VolumeSnapshotClass],
    /// Every claim.
    pub claims: &'a [PersistentVolumeClaim],
    /// Every PV.
    pub volumes: &'a [PersistentVolume],
}

/// A snapshot, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotId {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// One thing the controller does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set the snapshot's finalizers to exactly these (valid at `version` only).
    Finalizers {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The complete list.
        finalizers: Vec<String>,
        /// The resourceVersion read.
        version: Option<String>,
    },
    /// Write the driver's default class on a snapshot that names none.
    SetClass {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The class.
        class: String,
    },
    /// Create a dynamic snapshot's content.
    CreateContent(Box<VolumeSnapshotContent>),
    /// Fill in the uid of a pre-provisioned content's `volumeSnapshotRef`.
    BindContent {
        /// The content.
        content: String,
        /// The snapshot's uid.
        uid: String,
    },
    /// Write the snapshot's status (binding and what the content says).
    Status {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The new status.
        status: Box<VolumeSnapshotStatus>,
    },
    /// Put an error on the snapshot's status and tell it in a warning event.
    Error {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The event's reason.
        reason: &'static str,
        /// The message.
        message: String,
    },
    /// Delete a content whose snapshot was deleted (policy Delete), annotated for its driver.
    DeleteContent(String),
}

/// What to do about every snapshot.
pub fn plan(w: &World<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    for vs in w.snapshots {
        let id = SnapshotId {
            namespace: vs.namespace().unwrap_or_default(),
            name: vs.name_any(),
        };
        let bound = bound_content(w, vs);
        if vs.metadata.deletion_timestamp.is_some() {
            deleting(w, vs, &id, bound, &mut actions);
            continue;
        }
        let mut want: Vec<String> = vs.finalizers().to_vec();
        for f in [SNAPSHOT_AS_SOURCE_PROTECTION, SNAPSHOT_BOUND_PROTECTION] {
            let needed = f == SNAPSHOT_AS_SOURCE_PROTECTION || bound.is_some();
            if needed && !want.iter().any(|x| x == f) {
                want.push(f.to_string());
            }
        }
        if want != vs.finalizers() {
            actions.push(Action::Finalizers {
                snapshot: id.clone(),
                finalizers: want,
                version: vs.metadata.resource_version.clone(),
            });
        }
        let content = match (
            &vs.spec.source.persistent_volume_claim_name,
            &vs.spec.source.volume_snapshot_content_name,
        ) {
            (Some(claim), None) => dynamic(w, vs, &id, claim, &mut actions),
            (None, Some(content)) => pre_provisioned(w, vs, &id, content, &mut actions),
            _ => Err((
                "SnapshotValidationError",
                "exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set"
                    .to_string(),
            )),
        };
        match content {
            Ok(Some(c)) => {
                let status = mirrored(vs, c);
                if vs.status.as_ref() != Some(&status) {
                    actions.push(Action::Status {
                        snapshot: id,
                        status: Box::new(status),
                    });
                }
            }
            Ok(None) => {}
            Err((reason, message)) => {
                let told = vs
                    .status
                    .as_ref()
                    .and_then(|s| s.error.as_ref()?.message.as_deref())
                    == Some(message.as_str());
                if !told {
                    actions.push(Action::Error {
                        snapshot: id,
                        reason,
                        message,
                    });
                }
            }
        }
    }
    actions
}

/// The content a snapshot is bound to (both sides agree), if any.
fn bound_content<'a>(w: &World<'a>, vs: &VolumeSnapshot) -> Option<&'a VolumeSnapshotContent> {
    let name = vs
        .status
        .as_ref()
        .and_then(|s| s.bound_volume_snapshot_content_name.as_deref())?;
    w.contents
        .iter()
        .find(|c| c.name_any() == name && refers_to(c, vs))
}

fn refers_to(c: &VolumeSnapshotContent, vs: &VolumeSnapshot) -> bool {
    let r = &c.spec.volume_snapshot_ref;
    r.name.as_deref() == Some(vs.name_any().as_str())
        && r.namespace == vs.namespace()
        && r.uid
            .as_ref()
            .is_none_or(|u| Some(u) == vs.metadata.uid.as_ref())
}

type Outcome<'a> = Result<Option<&'a VolumeSnapshotContent>, (&'static str, String)>;

fn dynamic<'a>(
    w: &World<'a>,
    vs: &VolumeSnapshot,
    id: &SnapshotId,
    claim_name: &str,
    actions: &mut Vec<Action>,
) -> Outcome<'a> {
    let content_name = content_name_for(vs.metadata.uid.as_deref().unwrap_or_default());
    if let Some(c) = w.contents.iter().find(|c| c.name_any() == content_name) {
        return Ok(Some(c));
    }
    let failed = |why: String| {
        Err((
            "SnapshotContentCreationFailed",
            format!(
                "Failed to create snapshot content with error failed to get input parameters to create snapshot {}: \"{why}\"",
                id.name
            ),
        ))
    };
    let Some(claim) = w
        .claims
        .iter()
        .find(|c| c.name_any() == claim_name && c.namespace().as_deref() == Some(&id.namespace))
    else {
        return failed(format!(
            "failed to retrieve PVC {claim_name} from the lister: persistentvolumeclaim {claim_name:?} not found"
        ));
    };
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty());
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(volume_name) = volume_name.filter(|_| bound) else {
        return failed(format!(
            "the PVC {claim_name} is not yet bound to a PV, will not attempt to take a snapshot"
        ));
    };
    let Some(pv) = w.volumes.iter().find(|v| v.name_any() == volume_name) else {
        return failed(format!(
            "failed to retrieve PV {volume_name} from the API server: cannot find volume {volume_name}"
        ));
    };
    let Some((driver, handle)) = driver_and_handle(pv) else {
        return failed(format!(
            "the PV {volume_name} is neither a CSI volume nor one an external provisioner made; it cannot be snapshotted"
        ));
    };
    let class = match vs.spec.volume_snapshot_class_name.as_deref() {
        Some(name) => match w.classes.iter().find(|c| c.name_any() == name) {
            Some(c) => c,
            None => {
                return failed(format!(
                    "failed to retrieve snapshot class {name} from the informer: volumesnapshotclass.snapshot.storage.k8s.io {name:?} not found"
                ));
            }
        },
        None => {
            let defaults: Vec<&VolumeSnapshotClass> = w
                .classes
                .iter()
                .filter(|c| c.spec.driver == driver && c.is_default())
                .collect();
            return match defaults.as_slice() {
                [one] => {
                    actions.push(Action::SetClass {
                        snapshot: id.clone(),
                        class: one.name_any(),
                    });
                    Ok(None)
                }
                [] => Err((
                    "SetDefaultSnapshotClassFailed",
                    format!(
                        "Failed to set default snapshot class with error cannot find default snapshot class for driver {driver}"
                    ),
                )),
                many => Err((
                    "SetDefaultSnapshotClassFailed",
                    format!(
                        "Failed to set default snapshot class with error {} default snapshot classes were found for driver {driver}",
                        many.len()
                    ),
                )),
            };
        }
    };
    let content = VolumeSnapshotContent {
        metadata: kube::api::ObjectMeta {
            name: Some(content_name),
            ..Default::default()
        },
        spec: VolumeSnapshotContentSpec {
            volume_snapshot_ref: ObjectReference {
                api_version: Some("snapshot.storage.k8s.io/v1".into()),
                kind: Some("VolumeSnapshot".into()),
                namespace: Some(id.namespace.clone()),
                name: Some(id.name.clone()),
                uid: vs.metadata.uid.clone(),
                resource_version: vs.metadata.resource_version.clone(),
                ..Default::default()
            },
            deletion_policy: class.spec.deletion_policy.clone(),
            driver,
            volume_snapshot_class_name: Some(class.name_any()),
            source: VolumeSnapshotContentSource {
                volume_handle: Some(handle),
                snapshot_handle: None,
            },
            source_volume_mode: pv.spec.as_ref().and_then(|s| s.volume_mode.clone()),
        },
        status: None,
    };
    actions.push(Action::CreateContent(Box::new(content)));
    Ok(None)
}

/// A PV's CSI driver and volume handle; for a PV an external provisioner made (our local
/// volumes), the provisioner and the PV's name.
pub fn driver_and_handle(pv: &PersistentVolume) -> Option<(String, String)> {
    if let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) {
        return Some((csi.driver.clone(), csi.volume_handle.clone()));
    }
    let by = pv.annotations().get(PROVISIONED_BY)?;
    Some((by.clone(), pv.name_any()))
}

fn pre_provisioned<'a>(
    w: &World<'a>,
    vs: &VolumeSnapshot,
    id: &SnapshotId,
    name: &str,
    actions: &mut Vec<Action>,
) -> Outcome<'a> {
    let Some(c) = w.contents.iter().find(|c| c.name_any() == name) else {
        return Err((
            "SnapshotContentMissing",
            format!("VolumeSnapshotContent {name} is missing"),
        ));
    };
    let r = &c.spec.volume_snapshot_ref;
    if r.name.as_deref() != Some(id.name.as_str())
        || r.namespace.as_deref() != Some(id.namespace.as_str())
    {
        return Err((
            "SnapshotContentMisbound",
            format!(
                "VolumeSnapshotContent {name} is bound to a different snapshot ({}/{})",
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default()
            ),
        ));
    }
    match (&r.uid, &vs.metadata.uid) {
        (None, Some(uid)) => actions.push(Action::BindContent {
            content: name.to_string(),
            uid: uid.clone(),
        }),
        (Some(theirs), Some(mine)) if theirs != mine => {
            return Err((
                "SnapshotContentMisbound",
                format!(
                    "VolumeSnapshotContent {name} is bound to a different snapshot (uid {theirs})"
                ),
            ));
        }
        _ => {}
    }
    Ok(Some(c))
}

/// The snapshot's status as its content says.
fn mirrored(vs: &VolumeSnapshot, c: &VolumeSnapshotContent) -> VolumeSnapshotStatus {
    let mut status = vs.status.clone().unwrap_or_default();
    status.bound_volume_snapshot_content_name = Some(c.name_any());
    let cs = c.status.clone().unwrap_or_default();
    status.ready_to_use = Some(cs.ready_to_use.unwrap_or(false));
    if let Some(size) = cs.restore_size {
        status.restore_size = Some(quantity(size));
    }
    if let Some(ns) = cs.creation_time {
        status.creation_time = jiff::Timestamp::from_nanosecond(i128::from(ns))
            .ok()
            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    }
    status.error = cs.error;
    status
}

/// `bytes` as a binary-SI quantity (`1Gi`, `1536Mi`, or the plain count).
pub fn quantity(bytes: i64) -> Quantity {
    const UNITS: [(u32, &str); 5] = [(50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")];
    for (shift, unit) in UNITS {
        if bytes > 0 && bytes % (1i64 << shift) == 0 {
            return Quantity(format!("{}{unit}", bytes >> shift));
        }
    }
    Quantity(bytes.to_string())
}

fn deleting(
    w: &World<'_>,
    vs: &VolumeSnapshot,
    id: &SnapshotId,
    bound: Option<&VolumeSnapshotContent>,
    actions: &mut Vec<Action>,
) {
    let ours = [SNAPSHOT_AS_SOURCE_PROTECTION, SNAPSHOT_BOUND_PROTECTION];
    if !vs.finalizers().iter().any(|f| ours.contains(&f.as_str())) {
        return;
    }
    // A claim being restored from the snapshot holds it.
    let restoring = w.claims.iter().any(|c| {
        c.namespace().as_deref() == Some(id.namespace.as_str())
            && c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
            && c.spec.as_ref().is_some_and(|s| {
                let by_source = s
                    .data_source
                    .as_ref()
                    .is_some_and(|d| d.kind == "VolumeSnapshot" && d.name == id.name);
                let by_ref = s
                    .data_source_ref
                    .as_ref()
                    .is_some_and(|d| d.kind == "VolumeSnapshot" && d.name == id.name);
                by_source || by_ref
            })
    });
    if restoring {
        return;
    }
    if let Some(c) = bound
        && c.spec.deletion_policy == kubevirt_api::volumesnapshot::v1::DeletionPolicy::Delete
        && c.metadata.deletion_timestamp.is_none()
    {
        actions.push(Action::DeleteContent(c.name_any()));
    }
    let rest: Vec<String> = vs
        .finalizers()
        .iter()
        .filter(|f| !ours.contains(&f.as_str()))
        .cloned()
        .collect();
    actions.push(Action::Finalizers {
        snapshot: id.clone(),
        finalizers: rest,
        version: vs.metadata.resource_version.clone(),
    });
}

/// The snapshots by id (for the runner).
pub fn by_id(snapshots: &[VolumeSnapshot]) -> BTreeMap<SnapshotId, &VolumeSnapshot> {
    snapshots
        .iter()
        .map(|s| {
            (
                SnapshotId {
                    namespace: s.namespace().unwrap_or_default(),
                    name: s.name_any(),
                },
                s,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
