//! Runs [`super::plan`] for every VMI against an API server with kube-rs: a VMI is synced when it
//! changes, when a launcher pod it owns changes, when the node agent's grace for a finished pod
//! ends, and every few minutes. Pods are created with `generateName` (the API server names them
//! `virt-launcher-<vmi>-xxxxx`) and listed from the server (not a cache) before each decision,
//! so a sync never creates a second pod for a VMI. Status writes replace the VMI (it has no
//! status subresource, as upstream) with the resourceVersion read: a concurrent writer (the
//! node agent) wins and the sync is retried shortly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubevirt_api::core::v1::VirtualMachineInstance;

use super::render::{PodConfig, pod_for};
use super::sync::{PodAction, failed_create, plan};
use super::{APP_LABEL, APP_LAUNCHER, CREATED_BY_LABEL};
use crate::runtime::{SyncError, Target, describe, tolerate_gone};

/// A VMI with nothing pending is synced again after this long anyway.
const RESYNC: Duration = Duration::from_secs(300);
/// A pod the API server refused is tried again after this long.
const RETRY_CREATE: Duration = Duration::from_secs(10);
/// After a failed sync, the VMI is tried again after this long.
const RETRY: Duration = Duration::from_secs(2);

struct Context {
    client: Client,
    config: PodConfig,
}

/// Runs the VMI controller until `shutdown` resolves: every VMI gets its virt-launcher pod,
/// rendered with `config`. `on_sync` sees each sync's outcome (for logging).
pub async fn run(
    client: Client,
    config: PodConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let launchers = watcher::Config::default().labels(&format!("{APP_LABEL}={APP_LAUNCHER}"));
    Controller::new(vmis, watcher::Config::default())
        .owns(pods, launchers)
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |_, _, _| Requeue::requeue(RETRY),
            Arc::new(Context { client, config }),
        )
        .for_each(|r| {
            if let Some(line) = describe(r) {
                on_sync(line);
            }
            futures::future::ready(())
        })
        .await;
}

async fn reconcile(
    vmi: Arc<VirtualMachineInstance>,
    ctx: Arc<Context>,
) -> Result<Requeue, SyncError> {
    let target = Target::of(&*vmi)?;
    let Some(uid) = vmi.uid() else {
        return Ok(Requeue::await_change());
    };
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{CREATED_BY_LABEL}={uid}")))
        .await
        .map_err(target.err("listing the launcher pods of"))?;
    // Only pods this VMI controls (a label alone could be copied onto any pod).
    let owned: Vec<Pod> = listed
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    let now = Timestamp::now();
    let mut p = plan(&vmi, &owned, now);
    let mut refused = None;
    for action in &p.actions {
        match action {
            PodAction::Create => match pod_for(&vmi, &ctx.config) {
                Err(e) => refused = Some(e.to_string()),
                Ok(pod) => match pods.create(&PostParams::default(), &pod).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                        refused = Some(e.message);
                    }
                    Err(e) => return Err(target.err("creating the launcher pod of")(e)),
                },
            },
            PodAction::Delete { name, uid } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                tolerate_gone(pods.delete(name, &params).await)
                    .map_err(target.err("deleting a launcher pod of"))?;
            }
        }
    }
    if let Some(message) = &refused {
        failed_create(&mut p.status, message.clone(), now);
    }
    // VMIs have no status subresource (as upstream): the whole object is replaced, with the
    // resourceVersion read, so a concurrent writer (the node agent) wins and this sync retries.
    if vmi.status.as_ref() != Some(&p.status) || p.node_label.is_some() {
        let mut updated = (*vmi).clone();
        updated.status = Some(p.status.clone());
        if let Some(node) = &p.node_label {
            updated
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(crate::node::report::NODE_NAME_LABEL.into(), node.clone());
        }
        match vmis
            .replace(&target.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Requeue::requeue(RETRY)),
            Err(e) => {
                tolerate_gone::<()>(Err(e)).map_err(target.err("writing the status of"))?;
            }
        }
    }
    Ok(match (refused, p.requeue_at) {
        (Some(_), _) => Requeue::requeue(RETRY_CREATE),
        (None, Some(at)) => Requeue::requeue(
            at.duration_since(now)
                .try_into()
                .unwrap_or(RESYNC)
                .max(Duration::from_millis(100)),
        ),
        (None, None) => Requeue::requeue(RESYNC),
    })
}
