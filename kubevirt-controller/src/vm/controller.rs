//! Runs [`super::plan`] for every VM against an API server with kube-rs: a VM is synced when it
//! changes, when an instance it owns changes, when a start backoff ends, and every few minutes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineCondition, VirtualMachineInstance};

use super::instance;
use super::sync::{Action, Observed, plan};

/// A VM with nothing pending is synced again after this long anyway.
const RESYNC: Duration = Duration::from_secs(300);
/// After an error, the VM is tried again after this long.
const RETRY: Duration = Duration::from_secs(2);

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The VM has no namespace (VMs are namespaced: a broken object).
    #[error("virtualmachine {0} has no namespace")]
    NoNamespace(String),
    /// The API server refused or failed a request.
    #[error("{what} {namespace}/{name}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The VM's namespace.
        namespace: String,
        /// The VM's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

struct Context {
    client: Client,
}

/// Runs the VM controller until `shutdown` resolves. `on_sync` sees each sync's outcome (for
/// logging).
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let vms: Api<VirtualMachine> = Api::all(client.clone());
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone());
    Controller::new(vms, watcher::Config::default())
        .owns(vmis, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|r| {
            if let Some(line) = crate::outcome::describe(r) {
                on_sync(line);
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(_vm: Arc<VirtualMachine>, _error: &SyncError, _ctx: Arc<Context>) -> Requeue {
    Requeue::requeue(RETRY)
}

async fn reconcile(vm: Arc<VirtualMachine>, ctx: Arc<Context>) -> Result<Requeue, SyncError> {
    let name = vm.name_any();
    let namespace = vm
        .namespace()
        .ok_or_else(|| SyncError::NoNamespace(name.clone()))?;
    let api_err = |what| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| SyncError::Api {
            what,
            namespace,
            name,
            source,
        }
    };
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), &namespace);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let vmi = vmis
        .get_opt(&name)
        .await
        .map_err(api_err("reading the instance of"))?;
    let now = Timestamp::now();
    let mut p = plan(Observed {
        vm: &vm,
        vmi: vmi.as_ref(),
        now,
        jitter: f64::from(now.subsec_nanosecond()) / 1e9,
    });
    let mut failed_create = None;
    match &p.action {
        Action::None => {}
        Action::Create { paused } => {
            let manifest = instance::for_vm(&vm, *paused);
            match vmis.create(&PostParams::default(), &manifest).await {
                Ok(_) => {}
                // Made meanwhile: the watch brings it.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                // The template itself is refused (admission): say so on the VM.
                Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                    failed_create = Some(e.message);
                }
                Err(e) => return Err(api_err("creating the instance of")(e)),
            }
        }
        Action::Delete { uid } => {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match vmis.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(api_err("deleting the instance of")(e)),
            }
        }
        Action::SetStrategy(s) => {
            let patch = serde_json::json!({"spec": {"runStrategy": s.as_str(), "running": null}});
            vms.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err("setting the run strategy of"))?;
        }
    }
    if let Some(message) = failed_create {
        let conditions = p.status.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != "Failure");
        conditions.push(VirtualMachineCondition {
            type_: "Failure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(message),
            last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            last_probe_time: None,
        });
    }
    if vm.status.as_ref() != Some(&p.status) {
        let mut updated = (*vm).clone();
        updated.status = Some(p.status.clone());
        match vms
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            // Changed meanwhile (a request was added): the watch brings the new version.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
            Err(e) => return Err(api_err("writing the status of")(e)),
        }
    }
    Ok(match p.requeue_at.take() {
        Some(at) => Requeue::requeue(
            at.duration_since(now)
                .try_into()
                .unwrap_or(RETRY)
                .max(Duration::from_millis(100)),
        ),
        None => Requeue::requeue(RESYNC),
    })
}
