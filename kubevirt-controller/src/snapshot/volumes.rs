//! Which volumes of a VM a snapshot copies: every volume backed by a claim (a
//! `persistentVolumeClaim` or a `dataVolume`, whose claim has the DataVolume's name) whose
//! StorageClass has a VolumeSnapshotClass for its provisioner (upstream's `getSnapshotPVC` and
//! `getVolumeSnapshotClassName`). Everything else is excluded with the reason; only excluded
//! claim-backed volumes make a snapshot partial.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kubevirt_api::core::v1::{VirtualMachine, Volume, VolumeSnapshotStatus};

/// A VolumeSnapshotClass, as far as choosing one goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotClass {
    /// Its name.
    pub name: String,
    /// The CSI driver it serves (a StorageClass's provisioner).
    pub driver: String,
    /// Annotated `snapshot.storage.kubernetes.io/is-default-class`.
    pub default: bool,
}

/// A volume the snapshot copies.
#[derive(Clone, Debug, PartialEq)]
pub struct Included {
    /// The VM's volume name.
    pub volume: String,
    /// Its claim, as read.
    pub claim: PersistentVolumeClaim,
    /// The VolumeSnapshotClass its VolumeSnapshot uses.
    pub class: String,
}

/// A volume the snapshot leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    /// The VM's volume name.
    pub volume: String,
    /// Why, in words for a user.
    pub reason: String,
    /// A claim-backed volume (one a snapshot could copy with the right classes).
    pub claim_backed: bool,
    /// The StorageClass of its claim, when that class has no VolumeSnapshotClass at all.
    pub unconfigured_class: Option<String>,
}

/// The split of a VM's volumes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inclusion {
    /// Copied, in the VM's volume order.
    pub included: Vec<Included>,
    /// Left out, in the VM's volume order.
    pub excluded: Vec<Excluded>,
}

impl Inclusion {
    /// The snapshot cannot copy anything although the VM has claim-backed volumes: the message
    /// naming each of them and why (the snapshot fails with it).
    pub fn nothing_snapshottable(&self, vm: &str) -> Option<String> {
        let claims: Vec<String> = self
            .excluded
            .iter()
            .filter(|e| e.claim_backed)
            .map(|e| format!("volume {}: {}", e.volume, e.reason))
            .collect();
        (self.included.is_empty() && !claims.is_empty()).then(|| {
            format!(
                "no volume of VirtualMachine {vm} can be snapshotted: {}",
                claims.join("; ")
            )
        })
    }

    /// Some claim-backed volume was left out (indication `PartialSnapshot`).
    pub fn partial(&self) -> bool {
        self.excluded.iter().any(|e| e.claim_backed)
    }

    /// A VM's `status.volumeSnapshotStatuses` (upstream's VM controller), in `vm`'s volume order,
    /// with upstream's reasons where it has them.
    pub fn statuses(&self, vm: &VirtualMachine) -> Vec<VolumeSnapshotStatus> {
        crate::vm::storage::volumes(vm)
            .map(|v| {
                let name = v.name.clone();
                let reason = self.excluded.iter().find(|e| e.volume == v.name).map(|e| {
                    match (&e.unconfigured_class, e.claim_backed) {
                        (_, false) => format!(
                            "Snapshot is not supported for this volumeSource type [{name}]"
                        ),
                        (Some(sc), true) => format!(
                            "No VolumeSnapshotClass: Volume snapshots are not configured for this StorageClass [{sc}] [{name}]"
                        ),
                        (None, true) => e.reason.clone(),
                    }
                });
                VolumeSnapshotStatus {
                    enabled: reason.is_none(),
                    name,
                    reason,
                }
            })
            .collect()
    }
}

/// The claim a volume reads, if it is claim-backed.
pub fn claim_of(v: &Volume) -> Option<&str> {
    if let Some(p) = &v.persistent_volume_claim {
        return Some(&p.claim_name);
    }
    v.data_volume.as_ref().map(|d| d.name.as_str())
}

/// The kind of a volume that is not claim-backed, for its exclusion reason.
fn source_kind(v: &Volume) -> &'static str {
    match v {
        v if v.container_disk.is_some() => "containerDisk",
        v if v.cloud_init_no_cloud.is_some() => "cloudInitNoCloud",
        v if v.cloud_init_config_drive.is_some() => "cloudInitConfigDrive",
        v if v.empty_disk.is_some() => "emptyDisk",
        v if v.ephemeral.is_some() => "ephemeral",
        v if v.host_disk.is_some() => "hostDisk",
        v if v.config_map.is_some() => "configMap",
        v if v.secret.is_some() => "secret",
        v if v.service_account.is_some() => "serviceAccount",
        v if v.downward_api.is_some() => "downwardAPI",
        v if v.memory_dump.is_some() => "memoryDump",
        _ => "non-claim",
    }
}

/// The VolumeSnapshotClass for claims of `storage_class`: the only class of its provisioner, or
/// the default one among several (upstream's rule). `Err` says why none fits.
pub fn class_for(
    storage_class: &StorageClass,
    classes: &[SnapshotClass],
) -> Result<String, String> {
    let driver = &storage_class.provisioner;
    let name = storage_class.metadata.name.as_deref().unwrap_or_default();
    let matches: Vec<&SnapshotClass> = classes.iter().filter(|c| &c.driver == driver).collect();
    match matches.as_slice() {
        [] => Err(format!(
            "no VolumeSnapshotClass for StorageClass {name} (driver {driver})"
        )),
        [one] => Ok(one.name.clone()),
        many => many
            .iter()
            .find(|c| c.default)
            .map(|c| c.name.clone())
            .ok_or_else(|| {
                format!(
                    "{} matching VolumeSnapshotClasses for {name} and none is the default",
                    many.len()
                )
            }),
    }
}

/// Splits `vm`'s volumes by what a snapshot can copy, given the claims, StorageClasses and
/// VolumeSnapshotClasses that exist.
pub fn decide(
    vm: &VirtualMachine,
    claims: &BTreeMap<String, PersistentVolumeClaim>,
    storage_classes: &BTreeMap<String, StorageClass>,
    classes: &[SnapshotClass],
) -> Inclusion {
    let mut out = Inclusion::default();
    for v in crate::vm::storage::volumes(vm) {
        let exclude = |reason: String, claim_backed, unconfigured_class| Excluded {
            volume: v.name.clone(),
            reason,
            claim_backed,
            unconfigured_class,
        };
        let Some(claim_name) = claim_of(v) else {
            out.excluded.push(exclude(
                format!("a {} volume is not snapshotted", source_kind(v)),
                false,
                None,
            ));
            continue;
        };
        let decision = claims
            .get(claim_name)
            .ok_or_else(|| format!("claim {claim_name} does not exist"))
            .and_then(|claim| {
                let sc_name = claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.storage_class_name.as_deref())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| format!("claim {claim_name} has no StorageClass"))?;
                let sc = storage_classes
                    .get(sc_name)
                    .ok_or_else(|| format!("StorageClass {sc_name} does not exist"))?;
                Ok((claim, class_for(sc, classes)?))
            });
        match decision {
            Ok((claim, class)) => out.included.push(Included {
                volume: v.name.clone(),
                claim: claim.clone(),
                class,
            }),
            Err(reason) => {
                // A class whose driver no VolumeSnapshotClass serves: upstream names it.
                let unconfigured = claims
                    .get(claim_name)
                    .and_then(|c| c.spec.as_ref()?.storage_class_name.clone())
                    .filter(|sc| {
                        storage_classes
                            .get(sc)
                            .is_some_and(|c| !classes.iter().any(|k| k.driver == c.provisioner))
                    });
                out.excluded.push(exclude(reason, true, unconfigured))
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
