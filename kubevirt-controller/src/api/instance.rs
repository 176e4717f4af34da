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

/// The subresource (ours, beyond upstream) that saves a running VMI's memory state on its node:
/// PUT `.../virtualmachineinstances/{name}/memorysnapshot` with [`MemorySnapshotRequest`]. The
/// snapshot controller calls it while the VMI is paused for a volume cut.
pub const MEMORY_SNAPSHOT: &str = "memorysnapshot";

/// The body of [`MEMORY_SNAPSHOT`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemorySnapshotRequest {
    /// The memory state's name on the node (a DNS label: the snapshot content's name).
    pub name: String,
    /// The VMI's uid it must be taken of (a VMI of the same name started since is refused).
    pub uid: String,
}

/// Reads a [`MemorySnapshotRequest`] body.
pub fn decode_memory_snapshot(body: &[u8]) -> Result<MemorySnapshotRequest, ApiError> {
    let req: MemorySnapshotRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"name\": NAME, \"uid\": VMI-UID}}: {e}"
        ))
    })?;
    if !kubevirt_launcher_protocol::is_snapshot_name(&req.name) {
        return Err(ApiError::bad_request(format!(
            "name {:?} must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
            req.name
        )));
    }
    Ok(req)
}

/// PUT `.../virtualmachineinstances/{name}/memorysnapshot`: the node agent of the VMI's node has
/// its launcher save the memory state and keeps it in the node's store.
pub async fn memory_snapshot(
    client: &Client,
    agents: &NodeAgents,
    ns: &str,
    name: &str,
    req: MemorySnapshotRequest,
) -> Result<(), ApiError> {
    let vmi = get(client, ns, name).await?;
    if phase(&vmi) != "Running" {
        return Err(ApiError::conflict(VMI, name, "VMI is not running"));
    }
    let uid = vmi.uid().unwrap_or_default();
    if uid != req.uid {
        return Err(ApiError::conflict(
            VMI,
            name,
            format!("VMI has uid {uid}, not {}", req.uid),
        ));
    }
    let node = node_of(&vmi)?;
    let op = AgentOp::MemorySnapshot { name: req.name };
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
