//! What the VM controller reads off an instance, and the instance it creates for a VM.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};

/// Label upstream puts on a VM's instance: the VM's name.
pub const VM_NAME_LABEL: &str = "vm.kubevirt.io/name";
/// Annotation recording the VM generation the instance was created from.
pub const VM_GENERATION_ANNOTATION: &str = "kubevirt.io/vm-generation";

/// The instance's phase (`""` when unset).
pub fn phase(vmi: &VirtualMachineInstance) -> &str {
    vmi.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Succeeded or Failed: the instance will not run again.
pub fn is_final(vmi: &VirtualMachineInstance) -> bool {
    matches!(phase(vmi), "Succeeded" | "Failed")
}

/// Being deleted.
pub fn is_deleting(vmi: &VirtualMachineInstance) -> bool {
    vmi.metadata.deletion_timestamp.is_some()
}

/// Whether the instance ever reached Running (a final instance that never did is a failed start).
pub fn ever_ran(vmi: &VirtualMachineInstance) -> bool {
    phase(vmi) == "Running"
        || vmi.status.as_ref().is_some_and(|s| {
            s.phase_transition_timestamps
                .iter()
                .flatten()
                .any(|t| t.phase.as_deref() == Some("Running"))
        })
}

/// The status (`"True"`, `"False"`, ...) and reason of condition `type_`, if present.
pub fn condition<'a>(
    vmi: &'a VirtualMachineInstance,
    type_: &str,
) -> Option<(&'a str, Option<&'a str>)> {
    vmi.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_deref()))
}

/// The instance's UID (`""` before the API server assigned one).
pub fn uid(vmi: &VirtualMachineInstance) -> &str {
    vmi.metadata.uid.as_deref().unwrap_or("")
}

/// The VM as the controlling owner of what it makes (its instance, its DataVolumes): deleting
/// the VM deletes them.
pub fn controller_ref(vm: &VirtualMachine) -> OwnerReference {
    OwnerReference {
        api_version: VirtualMachine::api_version(&()).into_owned(),
        kind: VirtualMachine::kind(&()).into_owned(),
        name: vm.metadata.name.clone().unwrap_or_default(),
        uid: vm.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The node label the instance of a VM that resumes a memory state is pinned with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The instance a VM runs: the VM's name and namespace, the template's labels (plus
/// [`VM_NAME_LABEL`]) and annotations, the template's spec, and the VM as controlling owner so
/// deleting the VM deletes it. `paused` starts it paused (`spec.startStrategy: Paused`).
pub fn for_vm(vm: &VirtualMachine, paused: bool) -> VirtualMachineInstance {
    let name = vm.metadata.name.clone();
    let template = &vm.spec.template;
    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Some(n) = &name {
        labels.insert(VM_NAME_LABEL.into(), n.clone());
    }
    let mut annotations: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    if let Some(g) = vm.metadata.generation {
        annotations.insert(VM_GENERATION_ANNOTATION.into(), g.to_string());
    }
    // A restored memory state the VM may resume goes to its node agent on the instance, which
    // is steered to the node holding it (the agent there checks again).
    use crate::snapshot::memory::{RESUME_ANNOTATION, resume_check};
    let resume = resume_check(vm).ok().flatten();
    if resume.is_some()
        && let Some(raw) = vm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESUME_ANNOTATION))
    {
        annotations.insert(RESUME_ANNOTATION.into(), raw.clone());
    }
    let owner = controller_ref(vm);
    let mut spec = template.spec.clone().unwrap_or_default();
    if paused {
        spec.start_strategy = Some("Paused".into());
    }
    if let Some(r) = resume {
        spec.node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(HOSTNAME_LABEL.into(), r.node);
    }
    let mut vmi = VirtualMachineInstance::new(name.as_deref().unwrap_or_default(), spec);
    vmi.metadata = ObjectMeta {
        name,
        namespace: vm.metadata.namespace.clone(),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    vmi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> VirtualMachine {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "generation": 3},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}}
        }))
        .unwrap()
    }

    #[test]
    fn the_instance_carries_name_labels_owner_and_spec() {
        let vmi = for_vm(&vm(), false);
        assert_eq!(vmi.metadata.name.as_deref(), Some("web"));
        assert_eq!(vmi.metadata.namespace.as_deref(), Some("prod"));
        let labels = vmi.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[VM_NAME_LABEL], "web");
        assert_eq!(
            vmi.metadata.annotations.as_ref().unwrap()[VM_GENERATION_ANNOTATION],
            "3"
        );
        let owner = &vmi.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("VirtualMachine", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            vmi.spec
                .domain
                .memory
                .as_ref()
                .unwrap()
                .guest
                .as_ref()
                .unwrap()
                .0,
            "64Mi"
        );
        assert_eq!(vmi.spec.start_strategy, None);
        assert_eq!(
            for_vm(&vm(), true).spec.start_strategy.as_deref(),
            Some("Paused")
        );
    }
}
