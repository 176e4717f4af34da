//! Runs [`super::plan::plan`] for every VirtualMachineInstanceMigration with kube-rs. A VMIM is
//! synced when it changes and, until it is final, every [`POLL`] (its progress is written on
//! the VMI by the node agents). The VMI and its pods are read from the server before every
//! decision. The VMI's `migrationState` is written by replacing the VMI with the
//! resourceVersion read (VMIs have no status subresource; a concurrent writer wins and the
//! sync is retried), the VMIM's status through its status subresource.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action as Requeue;
use kube::{Client, ResourceExt};
use kubevirt_api::core::v1::{VirtualMachineInstance, VirtualMachineInstanceMigration};

use super::phase::is_final;
use super::plan::{Metadata, Step, plan};
use super::render::target_pod_for;
use super::{FINALIZER, VMI_NAME_LABEL};
use crate::clusterconfig::ConfigHandle;
use crate::events::Recorder;
use crate::runtime::{SyncError, Target, tolerate_gone};
use crate::vmi::CREATED_BY_LABEL;
use crate::vmi::controller::{Waiting, claim_modes};
use crate::vmi::render::PodConfig;

/// How often a migration that is not final is looked at.
const POLL: Duration = Duration::from_millis(500);
/// After a write lost to a concurrent one, the sync is retried after this long.
const RETRY: Duration = Duration::from_millis(200);

/// How the migration controller renders target pods.
#[derive(Clone, Debug)]
pub struct MigrationConfig {
    /// The pods' shared configuration (the VMI controller's).
    pub pods: PodConfig,
    /// Whether a target may run on its source's node (the local single-node plane); on a
    /// cluster the target pod must land elsewhere, as upstream's.
    pub within_node: bool,
}

struct Context {
    client: Client,
    config: MigrationConfig,
    cluster: ConfigHandle,
    recorder: Recorder,
}

/// Runs the migration controller until `shutdown` resolves; `on_sync` hears each outcome.
pub async fn run(
    client: Client,
    config: MigrationConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let context = Context {
        client: client.clone(),
        config,
        cluster: crate::clusterconfig::watch(client.clone()),
        recorder: Recorder::new(client.clone(), super::events::COMPONENT),
    };
    crate::runtime::run_with(client, context, shutdown, on_sync, reconcile, |c, _| c).await;
}

async fn reconcile(
    vmim: Arc<VirtualMachineInstanceMigration>,
    ctx: Arc<Context>,
) -> Result<Requeue, SyncError> {
    let target = Target::of(&*vmim)?;
    let Some(uid) = vmim.uid() else {
        return Ok(Requeue::await_change());
    };
    let vmims: Api<VirtualMachineInstanceMigration> =
        Api::namespaced(ctx.client.clone(), &target.namespace);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let name = vmim.spec.vmi_name.clone().unwrap_or_default();
    let vmi = match name.is_empty() {
        true => None,
        false => vmis
            .get_opt(&name)
            .await
            .map_err(target.err("reading the VMI of"))?,
    };
    let listed = match vmi.as_ref().and_then(|v| v.uid()) {
        Some(vmi_uid) => {
            let selector = format!("{CREATED_BY_LABEL}={vmi_uid}");
            pods.list(&ListParams::default().labels(&selector))
                .await
                .map_err(target.err("listing the launcher pods of"))?
                .items
        }
        None => Vec::new(),
    };
    let now = Timestamp::now();
    let mut p = plan(&vmim, vmi.as_ref(), &listed, now);
    if p.metadata == Metadata::Claim && !claim(&vmims, &vmim).await? {
        return Ok(Requeue::requeue(RETRY));
    }
    for step in &p.steps {
        match (step, vmi.as_ref()) {
            (Step::CreateTargetPod, Some(vmi)) => {
                match create_target(&ctx, &pods, vmi, &uid).await? {
                    Ok(pod) => {
                        ctx.recorder
                            .record(&*vmim, &super::events::target_created(&pod))
                            .await;
                    }
                    Err(why) => {
                        ctx.recorder
                            .record(&*vmim, &super::events::target_failed(&why))
                            .await;
                        fail_status(&mut p.status, &uid, why, now);
                    }
                }
            }
            (Step::DeletePod { name, uid }, _) => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                tolerate_gone(pods.delete(name, &params).await)
                    .map_err(target.err("deleting the target pod of"))?;
            }
            (Step::SetVmiState(state), Some(vmi)) => {
                let mut state = (**state).clone();
                if state.migration_configuration.is_none() {
                    // The cluster's `migrations` settings, for the agents (upstream's
                    // migrationState.migrationConfiguration).
                    state.migration_configuration = ctx
                        .cluster
                        .current()
                        .migrations
                        .and_then(|m| serde_json::from_value(m).ok());
                }
                let mut updated = vmi.clone();
                updated
                    .status
                    .get_or_insert_with(Default::default)
                    .migration_state = Some(state);
                match vmis
                    .replace(&vmi.name_any(), &PostParams::default(), &updated)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        return Ok(Requeue::requeue(RETRY));
                    }
                    Err(e) => {
                        tolerate_gone::<()>(Err(e))
                            .map_err(target.err("writing the migration state of the VMI of"))?;
                    }
                }
            }
            _ => {}
        }
    }
    let before = vmim.status.as_ref().and_then(|s| s.phase.clone());
    let after = p.status.phase.clone().unwrap_or_default();
    if before.as_deref() != Some(after.as_str()) {
        let why = p
            .status
            .migration_state
            .as_ref()
            .and_then(|m| m.failure_reason.as_deref());
        if let Some(note) = super::events::ended(&after, why) {
            ctx.recorder.record(&*vmim, &note).await;
        }
    }
    if vmim.status.as_ref() != Some(&p.status) {
        let patch = serde_json::json!({ "status": p.status });
        tolerate_gone(
            vmims
                .patch_status(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(target.err("writing the status of"))?;
    }
    if p.metadata == Metadata::Release {
        release(&vmims, &vmim).await?;
    }
    let phase = p.status.phase.clone().unwrap_or_default();
    Ok(if is_final(&phase) {
        Requeue::await_change()
    } else {
        Requeue::requeue(POLL)
    })
}

/// Puts upstream's finalizer and the `kubevirt.io/vmi-name` label on `vmim` (what upstream's
/// admission adds to every VMIM), as of the resourceVersion read: `Ok(false)` when a concurrent
/// write won (the sync is retried).
async fn claim(
    vmims: &Api<VirtualMachineInstanceMigration>,
    vmim: &VirtualMachineInstanceMigration,
) -> Result<bool, SyncError> {
    let target = Target::of(vmim)?;
    let mut finalizers = vmim.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        finalizers.push(FINALIZER.into());
    }
    let mut metadata = serde_json::json!({
        "resourceVersion": vmim.metadata.resource_version,
        "finalizers": finalizers,
    });
    if let Some(name) = vmim.spec.vmi_name.as_deref().filter(|n| !n.is_empty()) {
        metadata["labels"] = serde_json::json!({ VMI_NAME_LABEL: name });
    }
    let patch = serde_json::json!({ "metadata": metadata });
    match vmims
        .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(false),
        Err(e) => Err(target.err("adding the finalizer to")(e)),
    }
}

/// Takes upstream's finalizer off an ended `vmim` (a deleted one then goes).
async fn release(
    vmims: &Api<VirtualMachineInstanceMigration>,
    vmim: &VirtualMachineInstanceMigration,
) -> Result<(), SyncError> {
    let target = Target::of(vmim)?;
    let Some(index) = vmim
        .metadata
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == FINALIZER)
    else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let ops = serde_json::json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops)
        .map_err(|e| target.err("removing the finalizer of")(kube::Error::SerdeError(e)))?;
    let removed = vmims
        .patch(
            &target.name,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await;
    match removed {
        // The list changed meanwhile: the next sync (the change wakes it) tries again.
        Err(kube::Error::Api(e)) if e.code == 422 => Ok(()),
        other => tolerate_gone(other).map_err(target.err("removing the finalizer of")),
    }
}

/// Creates the target pod of migration `uid` (`Ok(Ok(its name))`); `Ok(Err(why))` when it
/// cannot be made (the migration fails with `why`).
async fn create_target(
    ctx: &Context,
    pods: &Api<Pod>,
    vmi: &VirtualMachineInstance,
    uid: &str,
) -> Result<Result<String, String>, SyncError> {
    let target = Target::of(vmi)?;
    let modes = match claim_modes(&ctx.client, &target.namespace, vmi).await {
        Ok(Ok(modes)) => modes,
        Ok(Err(Waiting::Claim(c))) => {
            return Ok(Err(format!("the VMI's claim {c} does not exist")));
        }
        Ok(Err(Waiting::DataVolume(dv, phase))) => {
            return Ok(Err(format!(
                "the VMI's DataVolume {dv} is not ready (phase {phase})"
            )));
        }
        Err(e) => return Err(target.err("reading the claims of")(e)),
    };
    let cluster = ctx.cluster.current();
    let pod = match target_pod_for(
        vmi,
        uid,
        &ctx.config.pods,
        &modes,
        &cluster,
        ctx.config.within_node,
    ) {
        Ok(pod) => pod,
        Err(e) => return Ok(Err(e.to_string())),
    };
    match pods.create(&PostParams::default(), &pod).await {
        Ok(made) => Ok(Ok(made.name_any())),
        Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
            Ok(Err(format!("the target pod was refused: {}", e.message)))
        }
        Err(e) => Err(target.err("creating the target pod of")(e)),
    }
}

/// Fails a migration whose target pod could not be made.
fn fail_status(
    status: &mut kubevirt_api::core::v1::VirtualMachineInstanceMigrationStatus,
    uid: &str,
    why: String,
    now: Timestamp,
) {
    status.phase = Some(super::phase::FAILED.into());
    let state = status.migration_state.get_or_insert_with(Default::default);
    state.migration_uid = Some(uid.to_string());
    state.completed = Some(true);
    state.failed = Some(true);
    state.failure_reason = Some(why);
    state.end_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
}
