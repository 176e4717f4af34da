//! Runs [`super::plan`] for every VirtualMachineInstanceReplicaSet with kube-rs: a set is synced
//! when it changes (including `kubectl scale`), when a VMI it owns changes, and periodically.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use kubevirt_api::core::v1::{VirtualMachineInstance, VirtualMachineInstanceReplicaSet};

use super::sync::plan;
use crate::events::Recorder;
use crate::runtime::{SyncError, Target, delete_vmi, run_owning_vmis, tolerate_gone, write_status};
use crate::vm::events as note;

const RESYNC: Duration = Duration::from_secs(300);
/// How long a set waits before replacing a VMI that failed without running.
const FAILED_START_BACKOFF: Duration = Duration::from_secs(10);
/// `source.component` of the set controller's events (upstream's; the reasons and messages are
/// the VM controller's, as upstream's are).
pub const COMPONENT: &str = "virtualmachinereplicaset-controller";

/// Runs the replica set controller until `shutdown` resolves. `on_sync` sees each sync's
/// outcome (for logging).
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let recorder = Recorder::new(client.clone(), COMPONENT);
    run_owning_vmis::<VirtualMachineInstanceReplicaSet, _, _>(
        client,
        shutdown,
        on_sync,
        move |rs, client| reconcile(rs, client, recorder.clone()),
    )
    .await;
}

async fn reconcile(
    rs: Arc<VirtualMachineInstanceReplicaSet>,
    client: Arc<Client>,
    recorder: Recorder,
) -> Result<Action, SyncError> {
    let target = Target::of(&*rs)?;
    let (namespace, name) = (&target.namespace, &target.name);
    if rs.metadata.deletion_timestamp.is_some() {
        // Its VMIs go with it through their owner references.
        return Ok(Action::await_change());
    }
    let sets: Api<VirtualMachineInstanceReplicaSet> = Api::namespaced((*client).clone(), namespace);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced((*client).clone(), namespace);
    let all = vmis
        .list(&ListParams::default())
        .await
        .map_err(target.err("listing the VMIs of"))?;
    let p = plan(&rs, &all.items, Timestamp::now());
    if p.ignored.is_some() {
        return Ok(Action::await_change());
    }
    let owner = OwnerReference {
        api_version: VirtualMachineInstanceReplicaSet::api_version(&()).into_owned(),
        kind: VirtualMachineInstanceReplicaSet::kind(&()).into_owned(),
        name: name.clone(),
        uid: rs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    for (vmis_to_patch, owners, what) in [
        (&p.adopt, serde_json::json!([owner]), "adopting a VMI for"),
        (&p.release, serde_json::Value::Null, "releasing a VMI of"),
    ] {
        let patch = serde_json::json!({"metadata": {"ownerReferences": owners}});
        for vmi in vmis_to_patch {
            tolerate_gone(
                vmis.patch(vmi, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )
            .map_err(target.err(what))?;
        }
    }
    for (vmi, uid) in &p.delete {
        match delete_vmi(&vmis, vmi, uid).await {
            Ok(()) => recorder.record(&*rs, &note::deleted(uid)).await,
            Err(e) => {
                let failed = note::failed_delete(vmi, &e.to_string());
                recorder.record(&*rs, &failed).await;
                return Err(target.err("deleting a VMI of")(e));
            }
        }
    }
    let template = &rs.spec.template;
    let meta = template.metadata.clone().unwrap_or_default();
    let basename = meta
        .name
        .clone()
        .or(meta.generate_name.clone())
        .unwrap_or_else(|| name.clone());
    for _ in 0..p.create {
        let mut vmi = VirtualMachineInstance::new("", template.spec.clone().unwrap_or_default());
        vmi.metadata.name = None;
        vmi.metadata.generate_name = Some(basename.clone());
        vmi.metadata.namespace = Some(namespace.clone());
        vmi.metadata.labels = meta.labels.clone();
        vmi.metadata.annotations = meta.annotations.clone();
        vmi.metadata.owner_references = Some(vec![owner.clone()]);
        match vmis.create(&PostParams::default(), &vmi).await {
            Ok(made) => {
                recorder
                    .record(&*rs, &note::created(&made.name_any()))
                    .await
            }
            Err(e) => {
                let message = match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                };
                recorder.record(&*rs, &note::failed_create(&message)).await;
                return Err(target.err("creating a VMI for")(e));
            }
        }
    }
    if rs.status.as_ref() != Some(&p.status) {
        let mut updated = (*rs).clone();
        updated.status = Some(p.status.clone());
        write_status(&sets, &updated)
            .await
            .map_err(target.err("writing the status of"))?;
    }
    Ok(if p.backoff {
        Action::requeue(FAILED_START_BACKOFF)
    } else {
        Action::requeue(RESYNC)
    })
}
