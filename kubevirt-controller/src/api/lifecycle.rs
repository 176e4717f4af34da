//! `virtualmachines/{name}/start|stop|restart`: what upstream's virt-api does, which is to change
//! the VM (its run strategy, or a state-change request in its status); the VM controller does
//! the rest.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};
use serde_json::{Value, json};

use super::options::{RestartOptions, StartOptions, StopOptions, is_dry_run};
use super::status::ApiError;
use crate::vm::instance::{is_deleting, is_final, phase};
use crate::vm::strategy::RunStrategy;

const VM: &str = "virtualmachine";

/// The VM and its instance.
struct Target {
    vm: VirtualMachine,
    vmi: Option<VirtualMachineInstance>,
    strategy: RunStrategy,
}

impl Target {
    async fn get(client: &Client, ns: &str, name: &str) -> Result<Self, ApiError> {
        let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
        let vm = vms
            .get_opt(name)
            .await
            .map_err(ApiError::from_kube)?
            .ok_or_else(|| ApiError::not_found(VM, name))?;
        let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns);
        let vmi = vmis.get_opt(name).await.map_err(ApiError::from_kube)?;
        let strategy = RunStrategy::of(&vm.spec).map_err(|e| ApiError::conflict(VM, name, e))?;
        Ok(Self { vm, vmi, strategy })
    }

    /// The instance, if it runs or is on its way (not final, not being deleted).
    fn live(&self) -> Option<&VirtualMachineInstance> {
        self.vmi
            .as_ref()
            .filter(|v| !is_final(v) && !is_deleting(v))
    }

    fn pending_requests(&self) -> bool {
        self.vm
            .status
            .as_ref()
            .and_then(|s| s.state_change_requests.as_ref())
            .is_some_and(|r| !r.is_empty())
    }
}

/// Adds state-change requests to the VM's status, if its resourceVersion is still the one read.
async fn add_requests(
    client: &Client,
    vm: &VirtualMachine,
    add: Vec<Value>,
) -> Result<(), ApiError> {
    let ns = vm.namespace().unwrap_or_default();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);
    let mut requests: Vec<Value> = vm
        .status
        .as_ref()
        .and_then(|s| s.state_change_requests.as_ref())
        .map(|r| {
            r.iter()
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect()
        })
        .unwrap_or_default();
    requests.extend(add);
    let patch = json!({"metadata": {"resourceVersion": vm.resource_version()},
        "status": {"stateChangeRequests": requests}});
    vms.patch_status(
        &vm.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(ApiError::from_kube)?;
    Ok(())
}

/// Switches the VM's spec to `strategy` (keeping to `running` if the VM uses that field).
async fn set_strategy(
    client: &Client,
    vm: &VirtualMachine,
    to: RunStrategy,
) -> Result<(), ApiError> {
    let ns = vm.namespace().unwrap_or_default();
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);
    let spec = if vm.spec.running.is_some() {
        json!({"running": to == RunStrategy::Always})
    } else {
        json!({"runStrategy": to.as_str()})
    };
    let patch = json!({"metadata": {"resourceVersion": vm.resource_version()}, "spec": spec});
    vms.patch(
        &vm.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(ApiError::from_kube)?;
    Ok(())
}

/// Sets the instance's grace period (what `--grace-period` / `--force` ask for).
async fn set_grace(
    client: &Client,
    vmi: &VirtualMachineInstance,
    seconds: i64,
) -> Result<(), ApiError> {
    if seconds < 0 {
        return Err(ApiError::bad_request(format!(
            "gracePeriod: must be 0 or more, not {seconds}"
        )));
    }
    let ns = vmi.namespace().unwrap_or_default();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"spec": {"terminationGracePeriodSeconds": seconds}});
    vmis.patch(
        &vmi.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(ApiError::from_kube)?;
    Ok(())
}

/// PUT `.../virtualmachines/{name}/start`.
pub async fn start(
    client: &Client,
    ns: &str,
    name: &str,
    opts: StartOptions,
) -> Result<(), ApiError> {
    let dry = is_dry_run(&opts.dry_run)?;
    let t = Target::get(client, ns, name).await?;
    let running = t.live().is_some_and(|v| phase(v) == "Running");
    match t.strategy {
        RunStrategy::Always | RunStrategy::Once if running => {
            return Err(ApiError::conflict(VM, name, "VM is already running"));
        }
        RunStrategy::Always | RunStrategy::Once | RunStrategy::WaitAsReceiver => {
            let why = format!("{} does not support manual start requests", t.strategy);
            return Err(ApiError::conflict(VM, name, why));
        }
        _ if t.live().is_some() && t.strategy != RunStrategy::Halted => {
            return Err(ApiError::conflict(VM, name, "VM is already running"));
        }
        _ => {}
    }
    if t.pending_requests() {
        return Err(ApiError::conflict(
            VM,
            name,
            "VM has pending state change requests",
        ));
    }
    if dry {
        return Ok(());
    }
    let mut request = json!({"action": "Start"});
    if opts.paused {
        request["data"] = json!({"paused": "true"});
    }
    if t.strategy == RunStrategy::Halted && !opts.paused {
        return set_strategy(client, &t.vm, RunStrategy::Always).await;
    }
    add_requests(client, &t.vm, vec![request]).await
}

/// PUT `.../virtualmachines/{name}/stop`.
pub async fn stop(
    client: &Client,
    ns: &str,
    name: &str,
    opts: StopOptions,
) -> Result<(), ApiError> {
    let dry = is_dry_run(&opts.dry_run)?;
    let t = Target::get(client, ns, name).await?;
    let live = t.vmi.as_ref().filter(|v| !is_final(v));
    let Some(vmi) = live else {
        return Err(ApiError::conflict(VM, name, "VM is not running"));
    };
    // Halted with an instance still there: it is stopping; only a shorter grace period helps.
    if t.strategy == RunStrategy::Halted && opts.grace_period.is_none() {
        return Err(ApiError::conflict(VM, name, "VM is not running"));
    }
    if dry {
        return Ok(());
    }
    if let Some(g) = opts.grace_period {
        set_grace(client, vmi, g).await?;
    }
    match t.strategy {
        RunStrategy::Halted => Ok(()),
        RunStrategy::Manual => {
            let uid = vmi.uid().unwrap_or_default();
            add_requests(client, &t.vm, vec![json!({"action": "Stop", "uid": uid})]).await
        }
        _ => set_strategy(client, &t.vm, RunStrategy::Halted).await,
    }
}

/// PUT `.../virtualmachines/{name}/restart`.
pub async fn restart(
    client: &Client,
    ns: &str,
    name: &str,
    opts: RestartOptions,
) -> Result<(), ApiError> {
    let dry = is_dry_run(&opts.dry_run)?;
    let t = Target::get(client, ns, name).await?;
    if t.strategy == RunStrategy::Halted {
        let why = format!("{} does not support manual restart requests", t.strategy);
        return Err(ApiError::conflict(VM, name, why));
    }
    let Some(vmi) = t.live() else {
        return Err(ApiError::conflict(VM, name, "VM is not running"));
    };
    if t.pending_requests() {
        return Err(ApiError::conflict(
            VM,
            name,
            "VM has pending state change requests",
        ));
    }
    if dry {
        return Ok(());
    }
    if let Some(g) = opts.grace_period_seconds {
        set_grace(client, vmi, g).await?;
    }
    let uid = vmi.uid().unwrap_or_default();
    add_requests(
        client,
        &t.vm,
        vec![
            json!({"action": "Stop", "uid": uid}),
            json!({"action": "Start"}),
        ],
    )
    .await
}
