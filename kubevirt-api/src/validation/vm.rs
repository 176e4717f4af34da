//! VirtualMachine checks (upstream's `vms-admitter`).

use super::datavolume::validate_dv_spec;
use super::vmi::{MemorySource, validate_vmi_spec};
use super::{FieldError, check_one_of, check_unique_name};
use crate::core::v1::{RunStrategy, VirtualMachine};
use crate::path::FieldPath;
use std::collections::HashSet;

const INSTANCETYPE_KINDS: &[&str] = &[
    "VirtualMachineInstancetype",
    "VirtualMachineClusterInstancetype",
];
const PREFERENCE_KINDS: &[&str] = &[
    "VirtualMachinePreference",
    "VirtualMachineClusterPreference",
];

/// The words of the running/runStrategy rule, shared with its CEL rule (`crd::cel`).
pub(crate) const RUNNING_AND_RUN_STRATEGY: &str = "running and runStrategy are mutually exclusive; remove running (deprecated) and keep runStrategy";

pub(super) fn validate_vm(vm: &VirtualMachine, errs: &mut Vec<FieldError>) {
    let spec = FieldPath::root().field("spec");
    if vm.spec.running.is_some() && vm.spec.run_strategy.is_some() {
        errs.push(FieldError::forbidden(
            spec.field("running"),
            RUNNING_AND_RUN_STRATEGY,
        ));
    }
    check_one_of(
        vm.spec.run_strategy.as_deref(),
        RunStrategy::VALUES,
        spec.field("runStrategy"),
        errs,
    );
    check_one_of(
        vm.spec.update_volumes_strategy.as_deref(),
        &["Replacement", "Migration"],
        spec.field("updateVolumesStrategy"),
        errs,
    );
    if let Some(it) = &vm.spec.instancetype {
        check_one_of(
            it.kind.as_deref(),
            INSTANCETYPE_KINDS,
            spec.field("instancetype").field("kind"),
            errs,
        );
        if it.name.is_none() && it.infer_from_volume.is_none() {
            errs.push(FieldError::required(
                spec.field("instancetype").field("name"),
                "name the instancetype or set inferFromVolume",
            ));
        }
    }
    if let Some(p) = &vm.spec.preference {
        check_one_of(
            p.kind.as_deref(),
            PREFERENCE_KINDS,
            spec.field("preference").field("kind"),
            errs,
        );
        if p.name.is_none() && p.infer_from_volume.is_none() {
            errs.push(FieldError::required(
                spec.field("preference").field("name"),
                "name the preference or set inferFromVolume",
            ));
        }
    }
    let template = spec.field("template").field("spec");
    match &vm.spec.template.spec {
        Some(vmi) => validate_vmi_spec(vmi, &template, MemorySource::Deferred, errs),
        None => errs.push(FieldError::required(
            template,
            "the VM template needs a VMI spec",
        )),
    }
    let mut names = HashSet::new();
    for (i, dvt) in vm
        .spec
        .data_volume_templates
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = spec.field("dataVolumeTemplates").index(i);
        let name = dvt
            .metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .unwrap_or_default();
        check_unique_name(
            name,
            &p.field("metadata"),
            &mut names,
            "dataVolumeTemplate",
            errs,
        );
        validate_dv_spec(&dvt.spec, &p.field("spec"), errs);
    }
}

/// The locks of an update (upstream's `validateRestoreStatus` and `validateSnapshotStatus`): while
/// a restore holds the VM (`status.restoreInProgress` of the stored VM) its spec may change only
/// if the VM stays halted (the restore itself writes the spec); while a snapshot holds it, not
/// at all. A VM edited mid-restore would start on half-restored disks; one edited mid-snapshot
/// would record a spec its volumes were not cut with.
pub(super) fn validate_vm_update(
    vm: &VirtualMachine,
    old: &VirtualMachine,
    errs: &mut Vec<FieldError>,
) {
    if vm.spec == old.spec {
        return;
    }
    let status = old.status.as_ref();
    let spec = FieldPath::root().field("spec");
    if let Some(restore) = status.and_then(|s| s.restore_in_progress.as_deref())
        && !halted(vm)
    {
        errs.push(FieldError::locked(
            spec.clone(),
            format!("Cannot start VM until restore {restore:?} completes"),
        ));
    }
    if let Some(snapshot) = status.and_then(|s| s.snapshot_in_progress.as_deref()) {
        errs.push(FieldError::locked(
            spec,
            format!("Cannot update VM spec until snapshot {snapshot:?} completes"),
        ));
    }
}

/// Whether the VM asks to be stopped: `runStrategy: Halted`, or no strategy and not `running: true`.
fn halted(vm: &VirtualMachine) -> bool {
    match vm.spec.run_strategy.as_deref() {
        Some(s) => s == "Halted",
        None => vm.spec.running != Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(run: serde_json::Value, status: serde_json::Value) -> VirtualMachine {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1"},
            "spec": {"runStrategy": run, "template": {"spec": {"domain": {"devices": {}}}}},
            "status": status,
        }))
        .unwrap()
    }

    fn update(old: &VirtualMachine, new: &VirtualMachine) -> Vec<String> {
        let mut errs = Vec::new();
        validate_vm_update(new, old, &mut errs);
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_restore_lets_the_spec_change_only_while_halted() {
        let old = vm(json!("Halted"), json!({"restoreInProgress": "r1"}));
        let mut restored = old.clone();
        restored.spec.template.metadata = Some(Default::default());
        assert!(update(&old, &restored).is_empty());
        let started = vm(json!("Always"), json!({"restoreInProgress": "r1"}));
        assert_eq!(
            update(&old, &started),
            ["spec: Cannot start VM until restore \"r1\" completes"]
        );
        let free = vm(json!("Halted"), json!({}));
        assert!(update(&free, &started).is_empty());
    }

    #[test]
    fn a_snapshot_freezes_the_spec_but_not_the_metadata() {
        let old = vm(json!("Always"), json!({"snapshotInProgress": "s1"}));
        let stopped = vm(json!("Halted"), json!({"snapshotInProgress": "s1"}));
        assert_eq!(
            update(&old, &stopped),
            ["spec: Cannot update VM spec until snapshot \"s1\" completes"]
        );
        let mut labelled = old.clone();
        labelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(update(&old, &labelled).is_empty());
    }
}
