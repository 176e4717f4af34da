//! One pass of the provisioner as a pure function of what it observed (the claims, volumes and
//! classes of the cluster, what the node's storage root holds): the [`Action`]s that bring the
//! node's volumes in line (upstream's external-provisioner and external-resizer decisions, for
//! one node's local volumes).
//!
//! - A claim of our provisioner (the binder annotated `volume.kubernetes.io/storage-provisioner`),
//!   unbound, whose `volume.kubernetes.io/selected-node` is this node (or none, on an instance
//!   for Immediate classes) and which has no PV yet: [`Action::Provision`], or
//!   [`Action::Refuse`] naming what is wrong.
//! - A PV of ours on this node, Released, reclaim policy Delete: [`Action::Reclaim`].
//! - A Block PV of ours on this node whose link does not lead to a loop device of its file:
//!   [`Action::Attach`]; a loop device of a file in the root no PV wants: [`Action::Detach`].
//! - A bound claim asking for more than its PV holds, in a class that allows expansion:
//!   [`Action::Grow`]; a claim whose `status.capacity` lags behind a grown PV:
//!   [`Action::SetClaimCapacity`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::claim::{self, Request, human};
use super::disk::{Disk, VOLUME_PREFIX, Volume, valid_name};
use super::{
    HOSTNAME_LABEL, PROVISIONED_BY, PROVISIONER, SELECTED_NODE, STORAGE_PROVISIONER,
    STORAGE_PROVISIONER_BETA,
};
use kubevirt_api::volumesnapshot::v1::{VolumeSnapshot, VolumeSnapshotContent};

/// The event reason of a claim that cannot be provisioned (upstream's).
pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
/// The event reason of a claim that cannot be grown (upstream's external-resizer).
pub const RESIZE_FAILED: &str = "VolumeResizeFailed";
/// The claim conditions of a resize in progress (upstream's), cleared once it is done.
pub const RESIZE_CONDITIONS: [&str; 2] = ["Resizing", "FileSystemResizePending"];

/// Which node, which root, which claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// This node's name (the PVs' `kubernetes.io/hostname` affinity, claims' selected node).
    pub node: String,
    /// The storage root (absolute).
    pub root: PathBuf,
    /// Also provision claims of Immediate classes, which name no node (one instance per cluster
    /// may, typically on a single-node cluster).
    pub immediate: bool,
}

/// What the provisioner observed.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// Every claim.
    pub claims: &'a [PersistentVolumeClaim],
    /// Every PV.
    pub volumes: &'a [PersistentVolume],
    /// Every StorageClass.
    pub classes: &'a [StorageClass],
    /// The storage root.
    pub disk: &'a Disk,
    /// Every VolumeSnapshot (claims restore from them).
    pub snapshots: &'a [VolumeSnapshot],
    /// Every VolumeSnapshotContent.
    pub contents: &'a [VolumeSnapshotContent],
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Make the volume, then create its PV.
    Provision {
        /// The claim (for its event).
        claim: ObjectReference,
        /// The volume to make.
        volume: Volume,
        /// The PV to create.
        pv: Box<PersistentVolume>,
    },
    /// Fill the volume from a snapshot on this node's disk, then make it and create its PV.
    Restore {
        /// The claim (for its event).
        claim: ObjectReference,
        /// The volume to make.
        volume: Volume,
        /// The PV to create.
        pv: Box<PersistentVolume>,
        /// The snapshot's handle.
        snapshot: String,
    },
    /// Tell the claim why it gets no volume (or cannot grow): an event.
    Refuse {
        /// The claim.
        claim: ObjectReference,
        /// [`PROVISIONING_FAILED`] or [`RESIZE_FAILED`].
        reason: &'static str,
        /// Why, naming the field or the sizes.
        message: String,
    },
    /// Delete the volume's data, then its PV.
    Reclaim {
        /// The PV (and volume) name.
        pv: String,
        /// The PV's uid (a precondition of its delete).
        uid: String,
    },
    /// Attach the Block volume's file (if no loop device backs it) and re-make its link.
    Attach {
        /// The volume name.
        volume: String,
    },
    /// Detach a loop device no volume wants.
    Detach {
        /// The device.
        device: PathBuf,
        /// Why it goes.
        why: String,
    },
    /// Grow the volume, then the PV's capacity, then the claim's status.
    Grow {
        /// The claim.
        claim: ObjectReference,
        /// The volume at its new size.
        volume: Volume,
        /// The new capacity (the claim's request as written).
        capacity: Quantity,
        /// The claim's status patch once grown.
        claim_status: Value,
    },
    /// Write the capacity of a grown PV on its claim.
    SetClaimCapacity {
        /// The claim.
        claim: ObjectReference,
        /// The claim's status patch.
        claim_status: Value,
    },
}

/// The actions that bring this node's volumes in line with what was observed.
pub fn plan(scope: &Scope, seen: Observed<'_>) -> Vec<Action> {
    let mut actions = Vec::new();
    let pv_names: BTreeSet<&str> = seen
        .volumes
        .iter()
        .filter_map(|v| v.metadata.name.as_deref())
        .collect();
    // Only a PV whose path is the one this root gives its name is ours to touch (a PV can carry
    // our annotation and any path).
    let ours: Vec<&PersistentVolume> = seen
        .volumes
        .iter()
        .filter(|v| is_ours(v) && node_of(v) == Some(scope.node.as_str()))
        .filter(|v| volume_name(scope, v).is_some())
        .collect();
    // Volumes whose loop devices stay: this node's PVs that are not reclaimed now, and the
    // volumes provisioned now.
    let mut keep: BTreeSet<String> = BTreeSet::new();
    // Volumes reclaimed now (their removal detaches their devices).
    let mut reclaiming: BTreeSet<String> = BTreeSet::new();

    for c in seen.claims {
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let bound_to = c.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        match bound_to.filter(|n| !n.is_empty()) {
            None => {
                if let Some(a) = provision(scope, seen, c, &pv_names) {
                    if let Action::Provision { volume, .. } | Action::Restore { volume, .. } = &a {
                        keep.insert(volume.name.clone());
                    }
                    actions.push(a);
                }
            }
            Some(pv) => {
                if let Some(v) = ours.iter().find(|v| v.metadata.name.as_deref() == Some(pv)) {
                    actions.extend(resize::resize(seen, c, v));
                }
            }
        }
    }

    for v in &ours {
        let Some(name) = volume_name(scope, v) else {
            continue;
        };
        if reclaimable(v) {
            reclaiming.insert(name.to_string());
            if let Some(uid) = v.metadata.uid.clone() {
                actions.push(Action::Reclaim {
                    pv: name.to_string(),
                    uid,
                });
            }
            continue;
        }
        keep.insert(name.to_string());
        let block = v.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block");
        if block && seen.disk.present.contains(name) && !linked(seen.disk, name) {
            actions.push(Action::Attach {
                volume: name.to_string(),
            });
        }
    }

    // Loop devices: one per kept volume (the one its link names, else the first), none for
    // the rest.
    let mut chosen: BTreeMap<&str, &Path> = BTreeMap::new();
    for name in &keep {
        let mut mine = seen
            .disk
            .loops
            .iter()
            .filter(|(n, l)| n == name && !l.deleted)
            .map(|(_, l)| l.device.as_path());
        let link = seen.disk.links.get(name).map(PathBuf::as_path);
        let pick = mine
            .clone()
            .find(|d| Some(*d) == link)
            .or_else(|| mine.next());
        if let Some(d) = pick {
            chosen.insert(name, d);
        }
    }
    for (name, l) in &seen.disk.loops {
        if chosen.get(name.as_str()) == Some(&l.device.as_path()) || reclaiming.contains(name) {
            continue;
        }
        let why = if l.deleted {
            format!("its file {} was deleted", l.backing.display())
        } else if keep.contains(name) {
            format!("a second device for {name}")
        } else {
            format!("no PV on this node wants {name}")
        };
        actions.push(Action::Detach {
            device: l.device.clone(),
            why,
        });
    }
    actions
}

/// The provisioning decision for an unbound claim, if it is this node's to make.
fn provision(
    scope: &Scope,
    seen: Observed<'_>,
    c: &PersistentVolumeClaim,
    pv_names: &BTreeSet<&str>,
) -> Option<Action> {
    let annotations = c.metadata.annotations.as_ref()?;
    let provisioner = annotations
        .get(STORAGE_PROVISIONER)
        .or_else(|| annotations.get(STORAGE_PROVISIONER_BETA))?;
    if provisioner != PROVISIONER {
        return None;
    }
    let uid = c.metadata.uid.as_deref()?;
    let class_name = c
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref());
    let class = class_name.and_then(|n| {
        seen.classes
            .iter()
            .find(|k| k.metadata.name.as_deref() == Some(n))
    });
    match annotations.get(SELECTED_NODE) {
        Some(n) if *n != scope.node => return None,
        Some(_) => {}
        None => {
            let immediate = class.is_some_and(|k| {
                k.volume_binding_mode.as_deref().unwrap_or("Immediate") == "Immediate"
            });
            if !(scope.immediate && immediate) {
                return None;
            }
        }
    }
    let name = format!("{VOLUME_PREFIX}{uid}");
    if pv_names.contains(name.as_str()) {
        return None;
    }
    let refuse = |message: String| {
        Some(Action::Refuse {
            claim: claim_ref(c),
            reason: PROVISIONING_FAILED,
            message,
        })
    };
    let Some(class) = class else {
        return refuse(match class_name {
            Some(n) => format!("spec.storageClassName: the StorageClass {n:?} does not exist"),
            None => "spec.storageClassName: the claim names no StorageClass".into(),
        });
    };
    if class.provisioner != PROVISIONER {
        return None;
    }
    let snapshot = match data_source(c) {
        DataSource::None => None,
        // A volume populator's claim: the populator provisions through a claim of its own.
        DataSource::Populator => return None,
        DataSource::Snapshot(name) => Some(name),
        DataSource::Unsupported(kind) => {
            return refuse(format!(
                "spec.dataSource: a {kind} source is not supported by {PROVISIONER} (its volumes start empty or from a VolumeSnapshot); import the data with a DataVolume instead"
            ));
        }
    };
    let request = match claim::request(c) {
        Ok(r) => r,
        Err(e) => return refuse(e.to_string()),
    };
    let restore = match snapshot {
        None => None,
        Some(name) => match restore::resolve(scope, seen, c, &name, &request) {
            Ok(r) => Some(r),
            Err(message) => return refuse(message),
        },
    };
    // A volume already on disk (a pass that stopped before its PV) needs no new space.
    if !seen.disk.present.contains(&name) && request.bytes > seen.disk.free_bytes {
        return refuse(format!(
            "spec.resources.requests.storage: {} ({}) is more than the {} free in {} on node {}",
            request.quantity.0,
            human(request.bytes),
            human(seen.disk.free_bytes),
            scope.root.display(),
            scope.node
        ));
    }
    let volume = Volume {
        name: name.clone(),
        mode: request.mode,
        bytes: request.bytes,
    };
    let pv = Box::new(pv_for(scope, c, class, &name, &request));
    Some(match restore {
        None => Action::Provision {
            claim: claim_ref(c),
            pv,
            volume,
        },
        Some(r) => Action::Restore {
            claim: claim_ref(c),
            pv,
            volume,
            snapshot: r.handle,
        },
    })
}

/// What a claim's `dataSource`/`dataSourceRef` asks.
enum DataSource {
    /// Nothing: an empty volume.
    None,
    /// A volume populator's kind (not core, not a snapshot).
    Populator,
    /// A VolumeSnapshot of the claim's namespace, by name.
    Snapshot(String),
    /// A clone (or a snapshot in another namespace), which local volumes cannot do.
    Unsupported(String),
}

fn data_source(c: &PersistentVolumeClaim) -> DataSource {
    let Some(spec) = c.spec.as_ref() else {
        return DataSource::None;
    };
    let (group, kind, name, other_namespace) = match (&spec.data_source_ref, &spec.data_source) {
        (Some(r), _) => (
            r.api_group.as_deref(),
            r.kind.as_str(),
            r.name.as_str(),
            r.namespace
                .as_ref()
                .is_some_and(|n| Some(n) != c.metadata.namespace.as_ref()),
        ),
        (None, Some(r)) => (
            r.api_group.as_deref(),
            r.kind.as_str(),
            r.name.as_str(),
            false,
        ),
        (None, None) => return DataSource::None,
    };
    match (group.unwrap_or(""), kind) {
        ("snapshot.storage.k8s.io", "VolumeSnapshot") if !other_namespace => {
            DataSource::Snapshot(name.to_string())
        }
        ("", "PersistentVolumeClaim") | ("snapshot.storage.k8s.io", "VolumeSnapshot") => {
            DataSource::Unsupported(kind.to_string())
        }
        _ => DataSource::Populator,
    }
}

/// The PV of claim `c`'s volume `name`, per the storage contract.
pub fn pv_for(
    scope: &Scope,
    c: &PersistentVolumeClaim,
    class: &StorageClass,
    name: &str,
    request: &Request,
) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(request.access_modes.clone()),
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                request.quantity.clone(),
            )])),
            claim_ref: Some(claim_ref(c)),
            local: Some(LocalVolumeSource {
                path: scope.root.join(name).to_string_lossy().into_owned(),
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![scope.node.clone()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some(request.mode.as_str().into()),
            mount_options: None,
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

/// Whether the PV carries our `pv.kubernetes.io/provisioned-by`.
pub fn is_ours(v: &PersistentVolume) -> bool {
    v.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER)
}

/// The node of a PV whose affinity is one `kubernetes.io/hostname In [node]`.
pub fn node_of(v: &PersistentVolume) -> Option<&str> {
    let terms = &v
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let [term] = terms.as_slice() else {
        return None;
    };
    let [req] = term.match_expressions.as_deref()? else {
        return None;
    };
    let values = req.values.as_deref()?;
    (req.key == HOSTNAME_LABEL && req.operator == "In" && values.len() == 1)
        .then(|| values[0].as_str())
}

/// The volume name of our PV `v`: its name, if a volume may have it and its `local.path` is
/// `<root>/<name>`.
fn volume_name<'a>(scope: &Scope, v: &'a PersistentVolume) -> Option<&'a str> {
    let name = v.metadata.name.as_deref().filter(|n| valid_name(n))?;
    let local = v.spec.as_ref()?.local.as_ref()?;
    (Path::new(&local.path) == scope.root.join(name)).then_some(name)
}

/// Released, reclaim policy Delete.
fn reclaimable(v: &PersistentVolume) -> bool {
    let phase = v.status.as_ref().and_then(|s| s.phase.as_deref());
    let policy = v
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    phase == Some("Released") && policy == Some("Delete")
}

/// Whether `<root>/<name>` links to a loop device backed by the volume's file.
fn linked(disk: &Disk, name: &str) -> bool {
    let Some(target) = disk.links.get(name) else {
        return false;
    };
    disk.loops
        .iter()
        .any(|(n, l)| n == name && !l.deleted && &l.device == target)
}

/// A reference to claim `c` (a PV's `claimRef`, an event's subject).
pub fn claim_ref(c: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.clone(),
        name: c.metadata.name.clone(),
        uid: c.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

mod resize;
pub mod restore;
#[cfg(test)]
mod tests;
