//! What the namespaced controllers share about kube-rs's runtime: the watch loop over a kind and
//! the VMIs it owns, the error of one sync, and the one-line outcome for the caller's log.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller, Error};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use kubevirt_api::core::v1::VirtualMachineInstance;
use serde::de::DeserializeOwned;

/// After a failed sync, the object is tried again after this long.
const RETRY: Duration = Duration::from_secs(2);

/// Errors of one sync of a namespaced object.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The object has no namespace (the kinds synced are namespaced: a broken object).
    #[error("{kind} {name} has no namespace")]
    NoNamespace {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// The API server refused or failed a request.
    #[error("{what} {kind} {namespace}/{name}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The synced object's kind.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

/// The synced object's namespace and name, and a maker of its API errors.
pub(crate) struct Target {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    kind: String,
}

impl Target {
    /// The namespace and name of `obj`, which must be namespaced.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Result<Self, SyncError> {
        let (name, kind) = (obj.name_any(), K::kind(&()).into_owned());
        match obj.namespace() {
            Some(namespace) => Ok(Target {
                namespace,
                name,
                kind,
            }),
            None => Err(SyncError::NoNamespace { kind, name }),
        }
    }

    /// Turns a failed request doing `what` into a [`SyncError`].
    pub fn err(&self, what: &'static str) -> impl FnOnce(kube::Error) -> SyncError + use<> {
        let (kind, namespace, name) =
            (self.kind.clone(), self.namespace.clone(), self.name.clone());
        move |source| SyncError::Api {
            what,
            kind,
            namespace,
            name,
            source: Box::new(source),
        }
    }
}

/// Syncs every `K` with `reconcile` when it changes, when a VMI it owns changes, and when
/// `reconcile` asks to be requeued, until `shutdown` resolves; `on_sync` hears each outcome.
pub(crate) async fn run_owning_vmis<K, F, Fut>(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
    reconcile: F,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Client>) -> Fut,
    Fut: Future<Output = Result<Action, SyncError>> + Send + 'static,
{
    run_owning_vmis_and(client, shutdown, on_sync, reconcile, |c, _| c).await;
}

/// [`run_owning_vmis`], with more watches added by `also` (e.g. other kinds `K` owns).
pub(crate) async fn run_owning_vmis_and<K, F, Fut>(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
    reconcile: F,
    also: impl FnOnce(Controller<K>, &Client) -> Controller<K>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Client>) -> Fut,
    Fut: Future<Output = Result<Action, SyncError>> + Send + 'static,
{
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone());
    run_with(
        client.clone(),
        client,
        shutdown,
        on_sync,
        reconcile,
        |c, client| also(c.owns(vmis, watcher::Config::default()), client),
    )
    .await;
}

/// Syncs every `K` with `reconcile` (given `context`) when it changes and when whatever
/// `watches` adds changes, retrying a failed sync after a short while, until `shutdown`
/// resolves; `on_sync` hears each outcome. The one loop the controllers of this crate run.
pub(crate) async fn run_with<K, C, F, Fut>(
    client: Client,
    context: C,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
    reconcile: F,
    watches: impl FnOnce(Controller<K>, &Client) -> Controller<K>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, SyncError>> + Send + 'static,
{
    let objects: Api<K> = Api::all(client.clone());
    watches(
        Controller::new(objects, watcher::Config::default()),
        &client,
    )
    .graceful_shutdown_on(shutdown)
    .run(
        reconcile,
        |_, _, _| Action::requeue(RETRY),
        Arc::new(context),
    )
    .for_each(|r| {
        if let Some(line) = describe(r) {
            on_sync(line);
        }
        futures::future::ready(())
    })
    .await;
}

/// `Ok("namespace/name")` for a sync done, `Err(message)` for a failure, `None` for what is
/// not worth a line (a requeued object that was deleted meanwhile).
pub(crate) fn describe<K, E1, E2>(
    r: Result<(ObjectRef<K>, Action), Error<E1, E2>>,
) -> Option<Result<String, String>>
where
    K: Resource,
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    match r {
        Ok((obj, _)) => Some(Ok(format!(
            "{}/{}",
            obj.namespace.unwrap_or_default(),
            obj.name
        ))),
        Err(Error::ObjectNotFound(_)) => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

/// A request about an object that is gone, or changed meanwhile (409), is no error: the watch
/// brings the new state and the next sync acts on it.
pub(crate) fn tolerate_gone<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes VMI `name` if it still has `uid` (a precondition, so a new VMI of the same name is
/// never hit).
pub(crate) async fn delete_vmi(
    api: &Api<VirtualMachineInstance>,
    name: &str,
    uid: &str,
) -> Result<(), kube::Error> {
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    tolerate_gone(api.delete(name, &params).await)
}

/// Writes `updated`'s status through the status subresource, with `updated`'s resourceVersion
/// as the precondition (a concurrent writer wins; the next sync retries).
pub(crate) async fn write_status<K>(api: &Api<K>, updated: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + Debug,
{
    tolerate_gone(
        api.replace_status(
            &updated.name_any(),
            &kube::api::PostParams::default(),
            updated,
        )
        .await,
    )
}
