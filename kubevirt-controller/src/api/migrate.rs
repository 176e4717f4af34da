//! `virtualmachines/{name}/migrate`: what upstream's virt-api does, which is to create a
//! VirtualMachineInstanceMigration (`generateName: kubevirt-migrate-vm-`) for the VM's running
//! instance; the migration controller ([`crate::migration`]) and the node agents move it.

use std::collections::BTreeMap;

use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use kubevirt_api::core::v1::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceMigration,
    VirtualMachineInstanceMigrationSpec,
};
use serde::{Deserialize, Serialize};

use super::options::is_dry_run;
use super::status::ApiError;
use crate::migration::{FINALIZER, VMI_NAME_LABEL};
use crate::vm::instance::{is_deleting, phase};

/// `v1.MigrateOptions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateOptions {
    /// `["All"]`: check only, change nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<String>,
    /// Node labels the target node must carry besides the VM's own selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_node_selector: Option<BTreeMap<String, String>>,
}

/// The prefix of the migrations this subresource creates (upstream's).
pub const GENERATE_NAME: &str = "kubevirt-migrate-vm-";

/// PUT `.../virtualmachines/{name}/migrate`: the migration created (its name), or `None` for a
/// dry run.
///
/// # Errors
/// 404 without the VM, 409 when its instance does not run (upstream's "VM is not running").
pub async fn migrate(
    client: &Client,
    ns: &str,
    name: &str,
    opts: MigrateOptions,
) -> Result<Option<String>, ApiError> {
    let dry = is_dry_run(&opts.dry_run)?;
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    if vms
        .get_opt(name)
        .await
        .map_err(ApiError::from_kube)?
        .is_none()
    {
        return Err(ApiError::not_found("virtualmachine", name));
    }
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns);
    let running = vmis
        .get_opt(name)
        .await
        .map_err(ApiError::from_kube)?
        .is_some_and(|vmi| phase(&vmi) == "Running" && !is_deleting(&vmi));
    if !running {
        return Err(ApiError::conflict(
            "virtualmachine",
            name,
            "VM is not running",
        ));
    }
    let vmim = VirtualMachineInstanceMigration {
        // Upstream's admission puts the finalizer and the VMI's name label on every VMIM: the
        // migration can be cancelled (deleted) and found by its VMI from the start.
        metadata: ObjectMeta {
            generate_name: Some(GENERATE_NAME.into()),
            namespace: Some(ns.into()),
            labels: Some([(VMI_NAME_LABEL.to_string(), name.to_string())].into()),
            finalizers: Some(vec![FINALIZER.into()]),
            ..ObjectMeta::default()
        },
        spec: VirtualMachineInstanceMigrationSpec {
            vmi_name: Some(name.into()),
            added_node_selector: opts.added_node_selector,
            ..VirtualMachineInstanceMigrationSpec::default()
        },
        status: None,
    };
    let params = PostParams {
        dry_run: dry,
        ..PostParams::default()
    };
    let vmims: Api<VirtualMachineInstanceMigration> = Api::namespaced(client.clone(), ns);
    let made = vmims
        .create(&params, &vmim)
        .await
        .map_err(ApiError::from_kube)?;
    Ok((!dry).then(|| made.metadata.name.unwrap_or_default()))
}
