//! The decisions of a VirtualMachineRestore (upstream's `pkg/storage/snapshot/restore.go`): one
//! claim per backed-up volume, made from its VolumeSnapshot and named by the restore
//! ([`claim_name`]: an override's `restoreName`, `<target>-<volume>` under `PrefixTargetName`,
//! else `restore-<restore UID>-<volume>`, `RandomizeNames`); the target VM's spec rewritten from
//! the snapshot's copy with those claims (a new VM with the restore's JSON `patches` applied);
//! the target's DataVolumes the new spec no longer names.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, TypedLocalObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubevirt_api::core::v1::{PersistentVolumeClaimVolumeSource, VirtualMachine};
use kubevirt_api::snapshot::v1beta1::{
    VirtualMachineRestore, VirtualMachineSnapshotContent, VolumeBackup, VolumeRestore,
    VolumeRestoreOverride,
};

use super::memory;
use super::vsnap::GROUP;
use super::{
    LAST_RESTORE_ANNOTATION, RESTORE_NAME_ANNOTATION, RESTORE_SOURCE_NAME_LABEL,
    RESTORE_SOURCE_NAMESPACE_LABEL, restore_claim_name,
};

/// Claim annotations a restored claim does not inherit (binding and CDI state of the original).
const DROPPED_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io",
    "volume.beta.kubernetes.io",
    "cdi.kubevirt.io",
    "volume.kubernetes.io",
    "k8s.io/CloneRequest",
    "k8s.io/CloneOf",
];

/// Errors of a restore that no retry fixes until its inputs change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The content has no VM copy.
    #[error("unexpected snapshot source: the content has no VirtualMachine")]
    NoSource,
    /// A volume backup has no VolumeSnapshot.
    #[error("VolumeSnapshotName missing for volume {0}")]
    NoVolumeSnapshot(String),
    /// The memory-state marker could not be encoded.
    #[error("encoding the memory-state marker: {0}")]
    Marker(String),
    /// `volumeRestorePolicy: InPlace` (overwrite the VM's own claims) is not carried out here.
    #[error(
        "volumeRestorePolicy InPlace is not supported yet: restore to new claims (RandomizeNames, PrefixTargetName or volumeRestoreOverrides)"
    )]
    InPlace,
    /// A patch of `spec.patches` does not apply to the new VM.
    #[error("spec.patches[{index}] does not apply to the restored VM: {message}")]
    Patch {
        /// Which patch.
        index: usize,
        /// Why.
        message: String,
    },
}

/// The override `restore` gives `volume`, if any.
fn override_of<'a>(
    restore: &'a VirtualMachineRestore,
    volume: &str,
) -> Option<&'a VolumeRestoreOverride> {
    restore
        .spec
        .volume_restore_overrides
        .iter()
        .flatten()
        .find(|o| o.volume_name.as_deref() == Some(volume))
}

/// The name of `volume`'s restored claim: the override's `restoreName`; under
/// `PrefixTargetName` `<target>-<volume>`; else (`RandomizeNames`, the default)
/// `restore-<restore UID>-<volume>`.
pub fn claim_name(restore: &VirtualMachineRestore, volume: &str) -> Result<String, RestoreError> {
    if let Some(name) = override_of(restore, volume).and_then(|o| o.restore_name.clone()) {
        return Ok(name);
    }
    match restore.spec.volume_restore_policy.as_deref() {
        Some("InPlace") => Err(RestoreError::InPlace),
        Some("PrefixTargetName") => Ok(format!("{}-{volume}", restore.spec.target.name)),
        _ => Ok(restore_claim_name(
            restore.metadata.uid.as_deref().unwrap_or_default(),
            volume,
        )),
    }
}

/// `<name>-<uid>` of `restore`: the value of [`LAST_RESTORE_ANNOTATION`] it leaves on its VM.
pub fn restore_id(restore: &VirtualMachineRestore) -> String {
    format!(
        "{}-{}",
        restore.metadata.name.as_deref().unwrap_or_default(),
        restore.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// `vm` already carries `restore`'s spec.
pub fn applied(restore: &VirtualMachineRestore, vm: &VirtualMachine) -> bool {
    vm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_RESTORE_ANNOTATION))
        == Some(&restore_id(restore))
}

fn source_vm(
    content: &VirtualMachineSnapshotContent,
) -> Result<&kubevirt_api::snapshot::v1beta1::VirtualMachine, RestoreError> {
    content
        .spec
        .source
        .virtual_machine
        .as_ref()
        .ok_or(RestoreError::NoSource)
}

/// The names of the DataVolume templates of the snapshot's VM.
fn templates(content: &VirtualMachineSnapshotContent) -> Vec<String> {
    source_vm(content)
        .ok()
        .and_then(|vm| vm.spec.as_ref())
        .and_then(|s| s.data_volume_templates.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|t| t.metadata.as_ref().and_then(|m| m.name.clone()))
        .collect()
}

/// The name of the DataVolume `volume` reads in the snapshot's VM, if it has a template.
fn template_of(content: &VirtualMachineSnapshotContent, volume: &str) -> Option<String> {
    let vm = source_vm(content).ok()?;
    let dv = vm
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == volume)?
        .data_volume
        .as_ref()?
        .name
        .clone();
    templates(content).contains(&dv).then_some(dv)
}

/// One entry per backed-up volume: its new claim (and, for a volume of a DataVolume template,
/// the new DataVolume of the same name); entries already in `status.restores` are kept.
pub fn volume_restores(
    restore: &VirtualMachineRestore,
    content: &VirtualMachineSnapshotContent,
) -> Result<Vec<VolumeRestore>, RestoreError> {
    let done = restore.status.as_ref().and_then(|s| s.restores.as_ref());
    let mut out = Vec::new();
    for b in content.spec.volume_backups.iter().flatten() {
        if let Some(r) = done
            .into_iter()
            .flatten()
            .find(|r| r.volume_name == b.volume_name)
        {
            out.push(r.clone());
            continue;
        }
        let vs = b
            .volume_snapshot_name
            .clone()
            .ok_or_else(|| RestoreError::NoVolumeSnapshot(b.volume_name.clone()))?;
        let claim = claim_name(restore, &b.volume_name)?;
        out.push(VolumeRestore {
            data_volume_name: template_of(content, &b.volume_name).map(|_| claim.clone()),
            persistent_volume_claim: claim,
            volume_name: b.volume_name.clone(),
            volume_snapshot_name: vs,
        });
    }
    Ok(out)
}

/// The claim of restore entry `r`, made from its VolumeSnapshot with the backed-up claim's
/// spec (no bound volume), labels and annotations (minus binding and CDI state), labelled with
/// the snapshot's source VM. A claim for a DataVolume has no owner (its DataVolume adopts it).
pub fn restore_claim(
    restore: &VirtualMachineRestore,
    backup: &VolumeBackup,
    r: &VolumeRestore,
    source: (&str, &str),
) -> PersistentVolumeClaim {
    let meta = backup
        .persistent_volume_claim
        .metadata
        .clone()
        .unwrap_or_default();
    let overrides = override_of(restore, &r.volume_name);
    let mut labels = meta.labels.unwrap_or_default();
    labels.extend(overrides.and_then(|o| o.labels.clone()).unwrap_or_default());
    labels.insert(RESTORE_SOURCE_NAME_LABEL.into(), source.0.into());
    labels.insert(RESTORE_SOURCE_NAMESPACE_LABEL.into(), source.1.into());
    let mut annotations: BTreeMap<String, String> = meta
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !DROPPED_ANNOTATIONS.iter().any(|p| k.starts_with(p)))
        .collect();
    annotations.extend(
        overrides
            .and_then(|o| o.annotations.clone())
            .unwrap_or_default(),
    );
    annotations.insert(
        RESTORE_NAME_ANNOTATION.into(),
        restore.metadata.name.clone().unwrap_or_default(),
    );
    let mut spec = backup
        .persistent_volume_claim
        .spec
        .clone()
        .unwrap_or_default();
    spec.volume_name = None;
    spec.data_source = Some(TypedLocalObjectReference {
        api_group: Some(GROUP.into()),
        kind: "VolumeSnapshot".into(),
        name: r.volume_snapshot_name.clone(),
    });
    spec.data_source_ref = None;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(r.persistent_volume_claim.clone()),
            namespace: restore.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The VM the restore leaves: the snapshot's copy of the spec with every restored volume on its
/// new claim (a DataVolume template renamed to it; a DataVolume without a template becomes a
/// claim volume) and memory-dump volumes dropped. An existing target keeps its metadata and run
/// strategy (it is stopped and stays so); a new one takes the copy's labels and annotations.
/// Either is annotated with [`restore_id`].
pub fn restored_vm(
    restore: &VirtualMachineRestore,
    content: &VirtualMachineSnapshotContent,
    restores: &[VolumeRestore],
    target: Option<&VirtualMachine>,
) -> Result<VirtualMachine, RestoreError> {
    let copy = source_vm(content)?;
    let mut spec = copy.spec.clone().ok_or(RestoreError::NoSource)?;
    let by_volume: BTreeMap<&str, &VolumeRestore> = restores
        .iter()
        .map(|r| (r.volume_name.as_str(), r))
        .collect();
    let mut renamed = BTreeMap::new();
    if let Some(vmi) = spec.template.spec.as_mut()
        && let Some(volumes) = vmi.volumes.as_mut()
    {
        volumes.retain(|v| v.memory_dump.is_none());
        for v in volumes.iter_mut() {
            let Some(r) = by_volume.get(v.name.as_str()) else {
                continue;
            };
            if let Some(p) = v.persistent_volume_claim.as_mut() {
                p.claim_name = r.persistent_volume_claim.clone();
            } else if let Some(d) = v.data_volume.as_mut() {
                match &r.data_volume_name {
                    Some(new) => {
                        renamed.insert(d.name.clone(), new.clone());
                        d.name = new.clone();
                    }
                    None => {
                        v.data_volume = None;
                        v.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                            claim_name: r.persistent_volume_claim.clone(),
                            hotpluggable: None,
                            read_only: None,
                        });
                    }
                }
            }
        }
    }
    for t in spec.data_volume_templates.iter_mut().flatten() {
        if let Some(m) = t.metadata.as_mut()
            && let Some(new) = m.name.as_ref().and_then(|n| renamed.get(n))
        {
            m.name = Some(new.clone());
        }
    }
    let mut vm = match target {
        Some(t) => {
            let mut vm = t.clone();
            let (strategy, running) = (t.spec.run_strategy.clone(), t.spec.running);
            vm.spec = spec;
            vm.spec.run_strategy = strategy;
            vm.spec.running = running;
            vm.status = None;
            vm
        }
        None => {
            let meta = copy.metadata.clone().unwrap_or_default();
            let mut vm = VirtualMachine::new(&restore.spec.target.name, spec);
            vm.metadata.namespace = restore.metadata.namespace.clone();
            vm.metadata.labels = meta.labels;
            vm.metadata.annotations = meta.annotations;
            patched(vm, restore.spec.patches.as_deref().unwrap_or_default())?
        }
    };
    let id = restore_id(restore);
    let annotations = vm.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(LAST_RESTORE_ANNOTATION.into(), id.clone());
    // A memory state resumes only on the disks restored with it, on the VM it was taken of:
    // an older marker never survives a restore, and this one names these claims.
    annotations.remove(memory::RESUME_ANNOTATION);
    let claims = restores
        .iter()
        .map(|r| (r.volume_name.clone(), r.persistent_volume_claim.clone()))
        .collect();
    let target_uid = target.and_then(|t| t.metadata.uid.as_deref());
    if let Some(marker) = memory::resume_marker(content, target_uid, &id, claims) {
        let json =
            serde_json::to_string(&marker).map_err(|e| RestoreError::Marker(e.to_string()))?;
        annotations.insert(memory::RESUME_ANNOTATION.into(), json);
    }
    Ok(vm)
}

/// The DataVolumes of `old`'s templates that `new` no longer has (deleted after the restore).
pub fn deleted_data_volumes(old: &VirtualMachine, new: &VirtualMachine) -> Vec<String> {
    let names = |vm: &VirtualMachine| -> Vec<String> {
        vm.spec
            .data_volume_templates
            .iter()
            .flatten()
            .filter_map(|t| t.metadata.as_ref().and_then(|m| m.name.clone()))
            .collect()
    };
    let keep = names(new);
    names(old)
        .into_iter()
        .filter(|n| !keep.contains(n))
        .collect()
}

/// `vm` with the JSON patch operations `patches` (one operation a string) applied in order.
fn patched(vm: VirtualMachine, patches: &[String]) -> Result<VirtualMachine, RestoreError> {
    if patches.is_empty() {
        return Ok(vm);
    }
    let err = |index, message: String| RestoreError::Patch { index, message };
    let mut doc = serde_json::to_value(&vm).map_err(|e| err(0, e.to_string()))?;
    for (index, p) in patches.iter().enumerate() {
        let op: json_patch::PatchOperation =
            serde_json::from_str(p).map_err(|e| err(index, e.to_string()))?;
        json_patch::patch(&mut doc, &[op]).map_err(|e| err(index, e.to_string()))?;
    }
    serde_json::from_value(doc).map_err(|e| err(patches.len() - 1, e.to_string()))
}

#[cfg(test)]
mod tests;
