//! The workload controllers of the local control plane (what kube-controller-manager runs):
//! ReplicaSet, Deployment, DaemonSet and Job. Each is a kube-runtime `Controller` over its kind that
//! owns what it creates (owner references with `controller` and `blockOwnerDeletion`), adopts
//! orphans its selector selects and releases what it no longer selects.

pub mod common;
pub mod daemonset;
pub mod deployment;
pub mod job;
pub mod replicaset;
pub mod rollout;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller, Error};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};

pub use common::SyncError;

/// After a failed sync, the object is tried again after this long.
const RETRY: Duration = Duration::from_secs(2);

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `Ok("namespace/name")` for a sync done, `Err(message)` for a failure; nothing for an object
/// deleted meanwhile.
fn describe<K: kube::Resource, E1, E2>(
    r: Result<(ObjectRef<K>, Action), Error<E1, E2>>,
) -> Option<Result<String, String>>
where
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    match r {
        Ok((o, _)) => Some(Ok(format!(
            "{}/{}",
            o.namespace.unwrap_or_default(),
            o.name
        ))),
        Err(Error::ObjectNotFound(_)) => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

/// Run the ReplicaSet controller until `shutdown`.
pub async fn run_replicasets(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
    .graceful_shutdown_on(shutdown)
    .run(
        replicaset::reconcile,
        |_, _, _| Action::requeue(RETRY),
        Arc::new(client),
    )
    .for_each(|r| {
        describe(r).into_iter().for_each(&on_sync);
        futures::future::ready(())
    })
    .await;
}

/// Run the Deployment controller until `shutdown`.
pub async fn run_deployments(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown)
    .run(
        deployment::reconcile,
        |_, _, _| Action::requeue(RETRY),
        Arc::new(client),
    )
    .for_each(|r| {
        describe(r).into_iter().for_each(&on_sync);
        futures::future::ready(())
    })
    .await;
}

/// Run the DaemonSet controller until `shutdown`: every DaemonSet is synced again when a node
/// changes.
pub async fn run_daemonsets(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let (nodes, writer) = reflector::store::<Node>();
    let node_changes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .filter_map(|r| futures::future::ready(r.ok()));
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let daemonsets = controller.store();
    let ctx = Arc::new(daemonset::Context { client, nodes });
    controller
        .reconcile_all_on(node_changes.map(|_| ()))
        .graceful_shutdown_on(shutdown)
        .run(daemonset::reconcile, |_, _, _| Action::requeue(RETRY), ctx)
        .for_each(|r| {
            describe(r).into_iter().for_each(&on_sync);
            futures::future::ready(())
        })
        .await;
    drop(daemonsets);
}

/// Run the Job controller until `shutdown`.
pub async fn run_jobs(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(
            job::reconcile,
            |_, _, _| Action::requeue(RETRY),
            Arc::new(client),
        )
        .for_each(|r| {
            describe(r).into_iter().for_each(&on_sync);
            futures::future::ready(())
        })
        .await;
}
