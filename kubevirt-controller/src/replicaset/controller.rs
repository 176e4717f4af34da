//! Runs [`super::plan`] for every VirtualMachineInstanceReplicaSet with kube-rs: a set is synced
//! when it changes (including `kubectl scale`), when a VMI it owns changes, and periodically.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use kubevirt_api::core::v1::{VirtualMachineInstance, VirtualMachineInstanceReplicaSet};

use super::sync::plan;

const RESYNC: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_secs(2);
/// How long a set waits before replacing a VMI that failed without running.
const FAILED_START_BACKOFF: Duration = Duration::from_secs(10);

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
#[error("{what} for virtualmachineinstancereplicaset {namespace}/{name}: {source}")]
pub struct SyncError {
    what: &'static str,
    namespace: String,
    name: String,
    #[source]
    source: kube::Error,
}

struct Context {
    client: Client,
}

/// Runs the replica set controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let sets: Api<VirtualMachineInstanceReplicaSet> = Api::all(client.clone());
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(vmis, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |_, _: &SyncError, _| Action::requeue(RETRY),
            Arc::new(Context { client }),
        )
        .for_each(|r| {
            if let Some(line) = crate::outcome::describe(r) {
                on_sync(line);
            }
            futures::future::ready(())
        })
        .await;
}

async fn reconcile(
    rs: Arc<VirtualMachineInstanceReplicaSet>,
    ctx: Arc<Context>,
) -> Result<Action, SyncError> {
    let name = rs.name_any();
    let namespace = rs.namespace().unwrap_or_default();
    let err = |what| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| SyncError {
            what,
            namespace,
            name,
            source,
        }
    };
    if rs.metadata.deletion_timestamp.is_some() {
        // Its VMIs go with it through their owner references.
        return Ok(Action::await_change());
    }
    let sets: Api<VirtualMachineInstanceReplicaSet> =
        Api::namespaced(ctx.client.clone(), &namespace);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let all = vmis
        .list(&ListParams::default())
        .await
        .map_err(err("listing VMIs"))?;
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
    for vmi in &p.adopt {
        let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
        patch_ok(
            vmis.patch(vmi, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(err("adopting a VMI"))?;
    }
    for vmi in &p.release {
        let patch = serde_json::json!({"metadata": {"ownerReferences": null}});
        patch_ok(
            vmis.patch(vmi, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(err("releasing a VMI"))?;
    }
    for (vmi, uid) in &p.delete {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        patch_ok(vmis.delete(vmi, &params).await.map(|_| ())).map_err(err("deleting a VMI"))?;
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
        vmis.create(&PostParams::default(), &vmi)
            .await
            .map_err(err("creating a VMI"))?;
    }
    if rs.status.as_ref() != Some(&p.status) {
        let mut updated = (*rs).clone();
        updated.status = Some(p.status.clone());
        match sets
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
            Err(e) => return Err(err("writing the status")(e)),
        }
    }
    Ok(if p.backoff {
        Action::requeue(FAILED_START_BACKOFF)
    } else {
        Action::requeue(RESYNC)
    })
}

/// A VMI that is already gone, or changed meanwhile, is no error: the next sync sees it.
fn patch_ok<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
