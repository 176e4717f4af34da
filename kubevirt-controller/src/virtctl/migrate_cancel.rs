//! `virtctl migrate-cancel NAME`: upstream's, which deletes the VM's migration that has not
//! ended (found by its `kubevirt.io/vmi-name` label). The deletion is the cancel: the
//! migration controller aborts it ([`crate::migration`]), and the VMIM stays, held by its
//! finalizer, until the abort is settled.

use kube::api::{Api, DeleteParams, ListParams};
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstanceMigration};

use super::VirtctlError;
use super::connect::Connection;
use crate::migration::VMI_NAME_LABEL;
use crate::migration::phase::is_final;

/// The name of the first migration in `list` that has not ended (upstream picks the same).
pub fn unfinished(list: &[VirtualMachineInstanceMigration]) -> Option<String> {
    list.iter()
        .find(|m| {
            !is_final(
                m.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or(""),
            )
        })
        .and_then(|m| m.metadata.name.clone())
}

/// `virtctl migrate-cancel NAME`.
///
/// # Errors
/// No migration of `name` to cancel (upstream's "Found no migration to cancel for NAME", with
/// why when the VM does not exist either), or the server refused the list or the delete.
pub async fn run(c: &Connection, name: &str) -> Result<(), VirtctlError> {
    let vmims: Api<VirtualMachineInstanceMigration> =
        Api::namespaced(c.client.clone(), &c.namespace);
    let selector = format!("{VMI_NAME_LABEL}={name}");
    let list = vmims
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            VirtctlError::Failed(format!(
                "Error fetching virtual machine instance migration list  {}",
                VirtctlError::from_kube(e)
            ))
        })?;
    let Some(migration) = unfinished(&list.items) else {
        let vms: Api<VirtualMachine> = Api::namespaced(c.client.clone(), &c.namespace);
        let why = match vms.get_opt(name).await {
            Ok(None) => format!(": virtualmachine.kubevirt.io \"{name}\" not found"),
            _ => String::new(),
        };
        return Err(VirtctlError::Failed(format!(
            "Found no migration to cancel for {name}{why}"
        )));
    };
    vmims
        .delete(&migration, &DeleteParams::default())
        .await
        .map_err(|e| {
            VirtctlError::Failed(format!(
                "Error canceling migration {migration} of a VirtualMachine {name}: {}",
                VirtctlError::from_kube(e)
            ))
        })?;
    println!("VM {name} was scheduled to migrate-cancel");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmim(name: &str, phase: &str) -> VirtualMachineInstanceMigration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": name}, "spec": {"vmiName": "demo"},
            "status": {"phase": phase},
        }))
        .expect("vmim")
    }

    #[test]
    fn only_a_migration_that_has_not_ended_is_cancelled() {
        assert_eq!(unfinished(&[]), None);
        let ended = [vmim("a", "Succeeded"), vmim("b", "Failed")];
        assert_eq!(unfinished(&ended), None);
        let list = [vmim("a", "Succeeded"), vmim("b", "Running"), vmim("c", "")];
        assert_eq!(unfinished(&list).as_deref(), Some("b"));
        assert_eq!(unfinished(&[vmim("new", "")]).as_deref(), Some("new"));
    }
}
