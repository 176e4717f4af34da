//! Memory-state snapshots (ours, beyond upstream): a VirtualMachineSnapshot annotated
//! [`MEMORY_OPT_IN`]` = "true"` of a running VM also saves the guest's memory and device state
//! while the VMI is paused for the volume cut, and a restore of it onto the same VM resumes the
//! guest where it was instead of booting it.
//!
//! The pieces, all pure here: [`Shape`] (what a memory state needs of the VM: vCPUs, RAM,
//! devices, how it boots), [`MemoryState`] (what the content records in [`MEMORY_STATE`]: the
//! node holding the files, the VMI they were taken of, its shape), [`Resume`] (the one-shot
//! marker a restore leaves on the VM in [`RESUME_ANNOTATION`]: which content, which restore,
//! which claims) and [`resume_check`], the VM controller's decision whether the next VMI may
//! resume it.

use std::collections::BTreeMap;

use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstanceSpec};
use kubevirt_api::defaults::{ClusterDefaults, default_vmi_spec};
use kubevirt_api::snapshot::v1beta1::{
    SourceIndication, VirtualMachineSnapshot, VirtualMachineSnapshotContent,
    VirtualMachineSnapshotStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::LAST_RESTORE_ANNOTATION;

/// VirtualMachineSnapshot annotation (ours): `"true"` asks for the guest's memory state too.
pub const MEMORY_OPT_IN: &str = "snapshot.kubevirt-rs.io/memory";
/// Content annotation (ours): the [`MemoryState`] saved with the volumes, as JSON.
pub const MEMORY_STATE: &str = "snapshot.kubevirt-rs.io/memory-state";
/// Content annotation (ours): why the memory state could not be saved (the snapshot fails).
pub const MEMORY_ERROR: &str = "snapshot.kubevirt-rs.io/memory-error";
/// VM and VMI annotation (ours): the [`Resume`] marker, as JSON. On a VM: its next instance
/// resumes the memory state; on a VMI: the node agent starts its launcher from it.
pub const RESUME_ANNOTATION: &str = "snapshot.kubevirt-rs.io/resume-memory";

/// Indication (ours): the snapshot holds the guest's memory state.
pub const MEMORY_INDICATION: &str = "MemoryState";
/// Indication (ours): memory was asked for but the VM was not running: volumes only.
pub const NO_MEMORY_INDICATION: &str = "NoMemoryState";

/// Whether `snapshot` opts in to a memory-state snapshot.
pub fn wants_memory(snapshot: &VirtualMachineSnapshot) -> bool {
    snapshot
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MEMORY_OPT_IN))
        .is_some_and(|v| v == "true")
}

/// The name the launcher and the node agent give a content's memory state (a DNS label: the
/// content's name, `vmsnapshot-content-<uid>`, is one).
pub fn state_name(content: &VirtualMachineSnapshotContent) -> String {
    content.metadata.name.clone().unwrap_or_default()
}

/// What a memory state needs of the VM it resumes in: the same vCPUs, RAM, devices and boot
/// path (kubevirt-vmm refuses any other, this says which field differs before anything runs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    /// sockets × cores × threads.
    pub vcpus: u64,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Each disk as `name:kind:bus`, in order.
    pub disks: Vec<String>,
    /// Each interface as `name:model`, in order.
    pub interfaces: Vec<String>,
    /// Whether a virtio RNG is attached.
    pub rng: bool,
    /// `kernel` (kernelBoot) or `firmware`.
    pub boot: String,
}

/// The [`Shape`] of a VMI spec (a VM's template or a running VMI's), after the defaults the
/// API server gives a VMI (idempotent on a defaulted one). `key` seeds nothing the shape uses.
pub fn shape_of(spec: &VirtualMachineInstanceSpec) -> Shape {
    let mut spec = spec.clone();
    default_vmi_spec(&mut spec, "shape/shape", &ClusterDefaults::kubevirt_rs());
    let d = &spec.domain;
    let cpu = d.cpu.as_ref();
    let one = |v: Option<u32>| u64::from(v.unwrap_or(1).max(1));
    let vcpus = one(cpu.and_then(|c| c.sockets))
        * one(cpu.and_then(|c| c.cores))
        * one(cpu.and_then(|c| c.threads));
    let memory_bytes = d
        .memory
        .as_ref()
        .and_then(|m| m.guest.as_ref())
        .or_else(|| {
            d.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("memory"))
        })
        .and_then(|q| kubevirt_api::quantity::bytes_of(q).ok())
        .unwrap_or(0);
    let devices = serde_json::to_value(&d.devices).unwrap_or(Value::Null);
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let disks = devices["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|disk| {
            let kind = ["disk", "cdrom", "lun"]
                .into_iter()
                .find(|k| disk.get(*k).is_some())
                .unwrap_or("disk");
            let bus = text(&disk[kind], "bus").unwrap_or_else(|| "virtio".into());
            format!("{}:{kind}:{bus}", text(disk, "name").unwrap_or_default())
        })
        .collect();
    let interfaces = devices["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let model = text(i, "model").unwrap_or_else(|| "virtio".into());
            format!("{}:{model}", text(i, "name").unwrap_or_default())
        })
        .collect();
    let boot = match d.firmware.as_ref().and_then(|f| f.kernel_boot.as_ref()) {
        Some(_) => "kernel",
        None => "firmware",
    };
    Shape {
        vcpus,
        memory_bytes,
        disks,
        interfaces,
        rng: devices.get("rng").is_some_and(|r| !r.is_null()),
        boot: boot.into(),
    }
}

/// What differs between the shape a memory state was taken with (`saved`) and `now`, as
/// `field saved → now` items; empty when they match.
pub fn shape_differences(saved: &Shape, now: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |field: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{field} {a} → {b}"));
        }
    };
    cmp("vCPUs", saved.vcpus.to_string(), now.vcpus.to_string());
    cmp(
        "memory",
        format!("{} bytes", saved.memory_bytes),
        format!("{} bytes", now.memory_bytes),
    );
    cmp("disks", saved.disks.join(","), now.disks.join(","));
    cmp(
        "interfaces",
        saved.interfaces.join(","),
        now.interfaces.join(","),
    );
    cmp("rng", saved.rng.to_string(), now.rng.to_string());
    cmp("boot", saved.boot.clone(), now.boot.clone());
    out
}

/// What a content records of its memory state ([`MEMORY_STATE`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryState {
    /// The node whose agent holds the files.
    pub node: String,
    /// The VMI it was taken of.
    pub vmi_uid: String,
    /// What it needs of the VM.
    pub shape: Shape,
}

/// The memory state `content` records, if any (an unreadable record counts as none).
pub fn recorded(content: &VirtualMachineSnapshotContent) -> Option<MemoryState> {
    let raw = content.metadata.annotations.as_ref()?.get(MEMORY_STATE)?;
    serde_json::from_str(raw).ok()
}

/// Why saving `content`'s memory state failed, if it did.
pub fn failure(content: &VirtualMachineSnapshotContent) -> Option<String> {
    content
        .metadata
        .annotations
        .as_ref()?
        .get(MEMORY_ERROR)
        .cloned()
}

/// What the snapshot controller does about memory for one content sync, given that the VMI is
/// held paused for the cut (`paused`) and what is already recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryStep {
    /// Nothing (not asked for, offline, already saved or already failed).
    Nothing,
    /// Ask the node agent to save it now (the VMI is paused; no volume is cut yet or they are
    /// being cut in this same pause).
    Save,
    /// It cannot be taken consistently: fail the snapshot with this reason.
    Fail(String),
}

/// The memory decision. `vm_template` and `vmi_spec` are the VM's template and its running
/// instance's spec: a VM edited since its instance started would restore a spec its memory
/// state does not fit, so that fails here, naming the fields.
pub fn step(
    snapshot: &VirtualMachineSnapshot,
    content: &VirtualMachineSnapshotContent,
    vm_template: Option<&VirtualMachineInstanceSpec>,
    vmi_spec: Option<&VirtualMachineInstanceSpec>,
    paused: bool,
) -> MemoryStep {
    if !wants_memory(snapshot) || recorded(content).is_some() || failure(content).is_some() {
        return MemoryStep::Nothing;
    }
    let (Some(template), Some(running)) = (vm_template, vmi_spec) else {
        return MemoryStep::Nothing;
    };
    if !paused {
        return MemoryStep::Nothing;
    }
    let diff = shape_differences(&shape_of(running), &shape_of(template));
    if !diff.is_empty() {
        return MemoryStep::Fail(format!(
            "the VM's spec changed since its instance started ({}): its memory state would not fit the spec a restore gives it; restart the VM and take the snapshot again",
            diff.join("; ")
        ));
    }
    MemoryStep::Save
}

/// Adds our memory indications to a snapshot's status once it succeeded: `MemoryState` when
/// the content holds one, `NoMemoryState` when it was asked for and the VM was not running.
pub fn indicate(
    st: &mut VirtualMachineSnapshotStatus,
    snapshot: &VirtualMachineSnapshot,
    content: Option<&VirtualMachineSnapshotContent>,
) {
    if !wants_memory(snapshot) || st.phase.as_deref() != Some(super::status::SUCCEEDED) {
        return;
    }
    let Some(content) = content else { return };
    let (indication, message) = if recorded(content).is_some() {
        (
            MEMORY_INDICATION,
            "The guest's memory and device state was saved with the volumes (kubevirt-rs): a restore to this VM resumes the guest instead of booting it.",
        )
    } else {
        (
            NO_MEMORY_INDICATION,
            "A memory-state snapshot was asked for but the VM was not running: only its volumes were saved.",
        )
    };
    let list = st.indications.get_or_insert_with(Vec::new);
    if list.iter().any(|i| i == indication) {
        return;
    }
    list.push(indication.into());
    st.source_indications
        .get_or_insert_with(Vec::new)
        .push(SourceIndication {
            indication: indication.into(),
            message: message.into(),
        });
}

/// The marker a restore leaves on the VM it restores a memory state to ([`RESUME_ANNOTATION`]):
/// the next instance of the VM resumes `content`'s memory state on `node`, provided the VM
/// still carries restore `restore` and each volume still uses the claim it restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resume {
    /// The content (its memory state has the content's name).
    pub content: String,
    /// The node holding it.
    pub node: String,
    /// The restore (`<name>-<uid>`, [`LAST_RESTORE_ANNOTATION`]'s value) that made the disks.
    pub restore: String,
    /// Restored volume → its claim.
    pub claims: BTreeMap<String, String>,
    /// What the memory state needs of the VM.
    pub shape: Shape,
}

/// The resume marker of `vm`, if it carries one (an unreadable one is reported by
/// [`resume_check`]).
fn marker(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(RESUME_ANNOTATION)
        .map(String::as_str)
}

/// The claim each volume of a VMI spec uses (a DataVolume's claim has its name).
pub fn claims_of(spec: Option<&VirtualMachineInstanceSpec>) -> BTreeMap<String, String> {
    spec.and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let claim = v
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.clone())
                .or_else(|| v.data_volume.as_ref().map(|d| d.name.clone()))?;
            Some((v.name.clone(), claim))
        })
        .collect()
}

/// Whether `vm`'s next instance resumes a memory state: `Ok(None)` boots it, `Ok(Some)`
/// resumes, `Err(why)` refuses to start it (the VM's spec or disks no longer match the memory
/// state: resuming would run the guest on disks it did not leave, or on a machine it does not
/// fit). Removing [`RESUME_ANNOTATION`] from the VM boots it afresh.
pub fn resume_check(vm: &VirtualMachine) -> Result<Option<Resume>, String> {
    let Some(raw) = marker(&vm.metadata) else {
        return Ok(None);
    };
    let undo =
        format!("remove the VM's annotation {RESUME_ANNOTATION} to boot it from its disks instead");
    let resume: Resume = serde_json::from_str(raw).map_err(|e| {
        format!("the VM's memory-state marker {RESUME_ANNOTATION} is not readable ({e}); {undo}")
    })?;
    let last = vm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_RESTORE_ANNOTATION));
    if last != Some(&resume.restore) {
        return Err(format!(
            "the VM's disks come from restore {:?}, its memory state from restore {:?}: it is not resumed on other disks; {undo}",
            last.map(String::as_str).unwrap_or("none"),
            resume.restore
        ));
    }
    let template = vm.spec.template.spec.as_ref();
    let claims = claims_of(template);
    for (volume, claim) in &resume.claims {
        if claims.get(volume) != Some(claim) {
            return Err(format!(
                "volume {volume:?} no longer uses claim {claim:?} restored with the memory state of {}: the guest is not resumed on other disks; {undo}",
                resume.content
            ));
        }
    }
    let now = template.map(shape_of).unwrap_or_default();
    let diff = shape_differences(&resume.shape, &now);
    if !diff.is_empty() {
        return Err(format!(
            "the VM's spec no longer matches the memory state of {} ({}); {undo}",
            resume.content,
            diff.join("; ")
        ));
    }
    Ok(Some(resume))
}

/// The marker a restore of `content` onto `target_uid` leaves, or `None` (the content has no
/// memory state, or the target is another VM than the one it was taken of: a new VM boots from
/// its copied disks, never a second running copy of the source's guest).
pub fn resume_marker(
    content: &VirtualMachineSnapshotContent,
    target_uid: Option<&str>,
    restore_id: &str,
    claims: BTreeMap<String, String>,
) -> Option<Resume> {
    let state = recorded(content)?;
    let source_uid = content
        .spec
        .source
        .virtual_machine
        .as_ref()
        .and_then(|v| v.metadata.as_ref())
        .and_then(|m| m.uid.as_deref());
    if target_uid.is_none() || target_uid != source_uid {
        return None;
    }
    Some(Resume {
        content: state_name(content),
        node: state.node,
        restore: restore_id.into(),
        claims,
        shape: state.shape,
    })
}

/// The marker a VMI carries (what the node agent resumes it from).
pub fn vmi_resume(
    vmi: &kubevirt_api::core::v1::VirtualMachineInstance,
) -> Option<Result<Resume, String>> {
    marker(&vmi.metadata).map(|raw| {
        serde_json::from_str(raw).map_err(|e| {
            format!("the VMI's memory-state marker {RESUME_ANNOTATION} is not readable: {e}")
        })
    })
}

#[cfg(test)]
mod tests;
