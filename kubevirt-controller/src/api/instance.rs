//! `virtualmachineinstances/{name}/pause|unpause|softreboot|freeze|unfreeze`: checked here as
//! upstream's virt-api checks them, carried out by the node agent of the VMI's node.

use kube::{Api, Client, ResourceExt};
use kubevirt_api::core::v1::VirtualMachineInstance;

use super::agents::NodeAgents;
use super::options::{DryRunOptions, is_dry_run};
use super::status::ApiError;
use crate::node::endpoint::AgentOp;
use crate::vm::instance::{condition, phase};

pub(super) const VMI: &str = "virtualmachineinstance";

/// The actions on a running VMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmiAction {
    /// Pause the vCPUs.
    Pause,
    /// Resume them.
    Unpause,
    /// Reboot the guest (ACPI power button, started again).
    SoftReboot,
    /// Freeze the guest's filesystems (needs a guest agent).
    Freeze,
    /// Thaw them.
    Unfreeze,
}

impl VmiAction {
    /// The action named by the last path segment.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pause" => Self::Pause,
            "unpause" => Self::Unpause,
            "softreboot" => Self::SoftReboot,
            "freeze" => Self::Freeze,
            "unfreeze" => Self::Unfreeze,
            _ => return None,
        })
    }
}

/// The VMI `ns/name`, or upstream's NotFound.
pub async fn get(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<VirtualMachineInstance, ApiError> {
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns);
    vmis.get_opt(name)
        .await
        .map_err(ApiError::from_kube)?
        .ok_or_else(|| ApiError::not_found(VMI, name))
}

fn paused(vmi: &VirtualMachineInstance) -> bool {
    condition(vmi, "Paused").is_some_and(|(s, _)| s == "True")
}

/// The node a running VMI is on.
pub fn node_of(vmi: &VirtualMachineInstance) -> Result<String, ApiError> {
    vmi.status
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .ok_or_else(|| ApiError::conflict(VMI, &vmi.name_any(), "VMI is not running"))
}

/// PUT `.../virtualmachineinstances/{name}/{action}`.
pub async fn act(
    client: &Client,
    agents: &NodeAgents,
    ns: &str,
    name: &str,
    action: VmiAction,
    opts: DryRunOptions,
) -> Result<(), ApiError> {
    let dry = is_dry_run(&opts.dry_run)?;
    let vmi = get(client, ns, name).await?;
    if phase(&vmi) != "Running" {
        return Err(ApiError::conflict(VMI, name, "VMI is not running"));
    }
    let op = match action {
        VmiAction::Pause if paused(&vmi) => {
            return Err(ApiError::conflict(VMI, name, "VMI is already paused"));
        }
        VmiAction::Unpause if !paused(&vmi) => {
            return Err(ApiError::conflict(VMI, name, "VMI is not paused"));
        }
        VmiAction::SoftReboot if paused(&vmi) => {
            return Err(ApiError::conflict(VMI, name, "VMI is paused"));
        }
        VmiAction::Freeze | VmiAction::Unfreeze => {
            // Freezing filesystems is the guest agent's work; no guest here runs one.
            return Err(ApiError::conflict(
                VMI,
                name,
                "VMI does not have guest agent connected",
            ));
        }
        VmiAction::Pause => AgentOp::Pause,
        VmiAction::Unpause => AgentOp::Unpause,
        VmiAction::SoftReboot => AgentOp::SoftReboot,
    };
    if dry {
        return Ok(());
    }
    let node = node_of(&vmi)?;
    let uid = vmi.uid().unwrap_or_default();
    agents.call(client, &node, op, (ns, name, &uid)).await?;
    Ok(())
}

/// GET `.../virtualmachineinstances/{name}/guestosinfo|userlist|filesystemlist`: what the guest
/// agent reports; no guest here runs one, which is said as upstream says it.
pub async fn guest_info(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<axum::response::Response, ApiError> {
    let vmi = get(client, ns, name).await?;
    if phase(&vmi) != "Running" {
        return Err(ApiError::conflict(VMI, name, "VMI is not running"));
    }
    Err(ApiError::conflict(
        VMI,
        name,
        "VMI does not have guest agent connected",
    ))
}
