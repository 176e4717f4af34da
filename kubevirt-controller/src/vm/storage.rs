//! A VM's storage before its instance may start (upstream's `handleDataVolumes` and the storage
//! states of `setPrintableStatus`): the DataVolumes of `spec.dataVolumeTemplates` are made and
//! owned by the VM (even while it is stopped, as upstream), the instance starts once each is
//! populated, and the claims of its volumes are watched for binding.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_api::core::v1::{DataVolumeTemplateSpec, VirtualMachine};

use super::instance::controller_ref;

/// Annotation upstream puts on a template's DataVolume: CDI may adopt a claim of the same name.
pub const ALLOW_CLAIM_ADOPTION: &str = "cdi.kubevirt.io/allowClaimAdoption";
/// Label upstream puts on objects a VM made: the VM's UID.
pub const CREATED_BY_LABEL: &str = "kubevirt.io/created-by";

/// DataVolume phases after which an instance may start: populated, or waiting for its first
/// consumer (the instance's pod is that consumer).
const STARTABLE: [&str; 3] = ["Succeeded", "WaitForFirstConsumer", "PendingPopulation"];

/// What the controller found of a VM's storage, by name in the VM's namespace.
#[derive(Clone, Debug, Default)]
pub struct Storage<'a> {
    /// The DataVolumes that exist among those the VM names (templates and `dataVolume` volumes).
    pub data_volumes: BTreeMap<&'a str, &'a DataVolume>,
    /// The claims that exist among those the VM's volumes name.
    pub claims: BTreeMap<&'a str, &'a PersistentVolumeClaim>,
}

impl<'a> Storage<'a> {
    /// Indexes `data_volumes` and `claims` by name.
    pub fn of(data_volumes: &'a [DataVolume], claims: &'a [PersistentVolumeClaim]) -> Self {
        Self {
            data_volumes: data_volumes
                .iter()
                .filter_map(|d| Some((d.metadata.name.as_deref()?, d)))
                .collect(),
            claims: claims
                .iter()
                .filter_map(|c| Some((c.metadata.name.as_deref()?, c)))
                .collect(),
        }
    }
}

/// The names of the DataVolumes a VM uses: its templates' and its `dataVolume` volumes'.
pub fn data_volume_names(vm: &VirtualMachine) -> Vec<String> {
    let mut names: Vec<String> = templates(vm)
        .filter_map(|t| t.metadata.as_ref()?.name.clone())
        .collect();
    names.extend(volumes(vm).filter_map(|v| v.data_volume.as_ref().map(|d| d.name.clone())));
    names.sort();
    names.dedup();
    names
}

/// The names of the claims a VM's volumes use: `persistentVolumeClaim.claimName`, and a
/// `dataVolume`'s claim (named as the DataVolume).
pub fn claim_names(vm: &VirtualMachine) -> Vec<String> {
    let mut names: Vec<String> = volumes(vm)
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
                .or_else(|| v.data_volume.as_ref().map(|d| d.name.clone()))
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The DataVolumes of the VM's templates that do not exist yet, as they are to be created.
pub fn missing(vm: &VirtualMachine, storage: &Storage<'_>) -> Vec<DataVolume> {
    templates(vm)
        .filter(|t| {
            t.metadata
                .as_ref()
                .and_then(|m| m.name.as_deref())
                .is_some_and(|n| !storage.data_volumes.contains_key(n))
        })
        .map(|t| data_volume_for(vm, t))
        .collect()
}

/// Whether every template's DataVolume exists and is populated enough for the instance to
/// start.
pub fn templates_ready(vm: &VirtualMachine, storage: &Storage<'_>) -> bool {
    templates(vm).all(|t| {
        t.metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .and_then(|n| storage.data_volumes.get(n))
            .is_some_and(|dv| STARTABLE.contains(&phase(dv)))
    })
}

/// Whether a DataVolume the VM's volumes use is still being populated (upstream's
/// `HasDataVolumeProvisioning`: not populated, and not merely waiting unbound for a consumer).
pub fn provisioning(vm: &VirtualMachine, storage: &Storage<'_>) -> bool {
    used_data_volumes(vm, storage).any(|dv| match phase(dv) {
        "Succeeded" | "PendingPopulation" => false,
        "WaitForFirstConsumer" => dv_condition(dv, "Bound").is_some_and(|(s, _, _)| s == "True"),
        _ => true,
    })
}

/// Why a DataVolume the VM's volumes use cannot be populated, if one cannot (upstream's
/// `HasDataVolumeErrors`): it Failed, or its importer stopped on an error.
pub fn data_volume_error(vm: &VirtualMachine, storage: &Storage<'_>) -> Option<String> {
    used_data_volumes(vm, storage).find_map(|dv| {
        let name = dv.metadata.name.as_deref().unwrap_or_default();
        if phase(dv) == "Failed" {
            return Some(format!("DataVolume {name} is in Failed phase"));
        }
        match dv_condition(dv, "Running") {
            Some(("False", Some("Error" | "ImagePullFailed"), message)) => Some(format!(
                "DataVolume {name} importer has stopped running due to an error: {}",
                message.unwrap_or_default()
            )),
            _ => None,
        }
    })
}

/// Whether a claim the VM's volumes use exists and is not bound yet.
pub fn unbound_claim(vm: &VirtualMachine, storage: &Storage<'_>) -> bool {
    claim_names(vm).iter().any(|n| {
        storage
            .claims
            .get(n.as_str())
            .is_some_and(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
    })
}

/// The DataVolume a template makes: its name, labels and annotations (plus
/// [`ALLOW_CLAIM_ADOPTION`] and [`CREATED_BY_LABEL`]), the VM's namespace, the VM as controlling
/// owner, its spec (with the instance's priority class when the template sets none).
pub fn data_volume_for(vm: &VirtualMachine, template: &DataVolumeTemplateSpec) -> DataVolume {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    if let Some(uid) = &vm.metadata.uid {
        labels.insert(CREATED_BY_LABEL.into(), uid.clone());
    }
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(ALLOW_CLAIM_ADOPTION.into(), "true".into());
    let mut spec = template.spec.clone();
    if spec.priority_class_name.is_none() {
        spec.priority_class_name = vm
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.priority_class_name.clone());
    }
    let name = meta.name.unwrap_or_default();
    let mut dv = DataVolume::new(&name, spec);
    dv.metadata = ObjectMeta {
        name: Some(name),
        namespace: vm.metadata.namespace.clone(),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: Some(vec![controller_ref(vm)]),
        ..Default::default()
    };
    dv
}

fn templates(vm: &VirtualMachine) -> impl Iterator<Item = &DataVolumeTemplateSpec> {
    vm.spec.data_volume_templates.iter().flatten()
}

/// The volumes of `vm`'s template.
pub fn volumes(vm: &VirtualMachine) -> impl Iterator<Item = &kubevirt_api::core::v1::Volume> {
    vm.spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
}

fn used_data_volumes<'s>(
    vm: &'s VirtualMachine,
    storage: &'s Storage<'_>,
) -> impl Iterator<Item = &'s DataVolume> {
    volumes(vm)
        .filter_map(|v| v.data_volume.as_ref())
        .filter_map(|d| storage.data_volumes.get(d.name.as_str()).copied())
}

fn phase(dv: &DataVolume) -> &str {
    dv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn dv_condition<'d>(
    dv: &'d DataVolume,
    type_: &str,
) -> Option<(&'d str, Option<&'d str>, Option<&'d str>)> {
    dv.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()))
}

#[cfg(test)]
mod tests;
