//! `virtualmachines/{name}/start|stop|restart`: what upstream's virt-api does, which is to change
//! the VM (its run strategy, or a state-change request in its status); the VM controller does
//! the rest.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};
use serde_json::{Value, json};

use super::decide::{self, Change, Facts};
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

impl Target {
    fn facts(&self) -> Facts {
        let present = self.vmi.as_ref().filter(|v| !is_final(v));
        Facts {
            strategy: self.strategy,
            present: present.map(|v| v.uid().unwrap_or_default()),
            live: present.is_some_and(|v| !is_deleting(v)),
            running: present.is_some_and(|v| !is_deleting(v) && phase(v) == "Running"),
            pending: self.pending_requests(),
        }
    }

    /// Makes `change` (after `grace`, if given, on the instance).
    async fn make(
        &self,
        client: &Client,
        change: Change,
        grace: Option<i64>,
    ) -> Result<(), ApiError> {
        if let (Some(g), Some(vmi)) = (grace, self.vmi.as_ref()) {
            set_grace(client, vmi, g).await?;
        }
        match change {
            Change::SetStrategy(s) => set_strategy(client, &self.vm, s).await,
            Change::Requests(r) => add_requests(client, &self.vm, r).await,
            Change::GraceOnly => Ok(()),
        }
    }
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
    let change =
        decide::start(&t.facts(), opts.paused).map_err(|why| ApiError::conflict(VM, name, why))?;
    if dry {
        return Ok(());
    }
    t.make(client, change, None).await
}

/// PUT `.../virtualmachines/{name}/stop`.
pub async fn stop(
    client: &Client,
    ns: &str,
    name: &str,
    opts: StopOptions,
) -> Result<(), ApiError> {
    let dry = is_dry_run(&opts.dry_run)?;
    check_grace(opts.grace_period)?;
    let t = Target::get(client, ns, name).await?;
    let change = decide::stop(&t.facts(), opts.grace_period)
        .map_err(|why| ApiError::conflict(VM, name, why))?;
    if dry {
        return Ok(());
    }
    t.make(client, change, opts.grace_period).await
}

/// PUT `.../virtualmachines/{name}/restart`.
pub async fn restart(
    client: &Client,
    ns: &str,
    name: &str,
    opts: RestartOptions,
) -> Result<(), ApiError> {
    let dry = is_dry_run(&opts.dry_run)?;
    check_grace(opts.grace_period_seconds)?;
    let t = Target::get(client, ns, name).await?;
    let change = decide::restart(&t.facts()).map_err(|why| ApiError::conflict(VM, name, why))?;
    if dry {
        return Ok(());
    }
    t.make(client, change, opts.grace_period_seconds).await
}

/// A grace period must not be negative.
fn check_grace(grace: Option<i64>) -> Result<(), ApiError> {
    match grace {
        Some(g) if g < 0 => Err(ApiError::bad_request(format!(
            "gracePeriod: must be 0 or more, not {g}"
        ))),
        _ => Ok(()),
    }
}
