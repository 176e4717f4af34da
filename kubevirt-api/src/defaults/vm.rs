//! VirtualMachine defaults (upstream's `vm-mutator`).

use super::ClusterDefaults;
use super::datavolume::default_dv_spec;
use crate::core::v1::{Machine, VirtualMachine};

pub(super) fn default_vm(vm: &mut VirtualMachine, cluster: &ClusterDefaults) {
    let spec = &mut vm.spec;
    if spec.running.is_none() && spec.run_strategy.is_none() {
        spec.run_strategy = Some("Halted".into());
    }
    if let Some(it) = &mut spec.instancetype {
        it.kind
            .get_or_insert_with(|| "VirtualMachineClusterInstancetype".into());
        if it.infer_from_volume.is_some() {
            it.infer_from_volume_failure_policy
                .get_or_insert_with(|| "RejectInferFromVolumeFailure".into());
        }
    }
    if let Some(p) = &mut spec.preference {
        p.kind
            .get_or_insert_with(|| "VirtualMachineClusterPreference".into());
        if p.infer_from_volume.is_some() {
            p.infer_from_volume_failure_policy
                .get_or_insert_with(|| "RejectInferFromVolumeFailure".into());
        }
    }
    // The template keeps only what the VM mutator sets; the VMI gets the rest when it is created.
    if let Some(t) = &mut spec.template.spec {
        t.architecture
            .get_or_insert_with(|| cluster.architecture.clone());
        t.domain
            .machine
            .get_or_insert_with(Machine::default)
            .type_
            .get_or_insert_with(|| cluster.machine_type.clone());
    }
    for dvt in spec.data_volume_templates.iter_mut().flatten() {
        default_dv_spec(&mut dvt.spec);
    }
}
