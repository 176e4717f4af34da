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
