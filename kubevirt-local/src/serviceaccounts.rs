//! What kube-controller-manager's service account and root-CA publishers and the API server's
//! `kubernetes` Service do: every namespace gets the `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap (the server's CA, what in-cluster clients trust), and `default`
//! gets the `kubernetes` Service with Endpoints pointing at the API server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Service, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::workloads::SyncError;
use crate::workloads::common::Target;

/// The ConfigMap every namespace gets with the cluster CA.
pub const ROOT_CA: &str = "kube-root-ca.crt";

/// What the publisher publishes.
#[derive(Debug, Clone)]
pub struct Published {
    /// The API server's CA certificate (PEM).
    pub ca_pem: String,
    /// Where the API server listens (the `kubernetes` Service's endpoint).
    pub api: SocketAddr,
}

struct Ctx {
    client: Client,
    published: Published,
}

/// Create `obj` unless it exists (an existing one is left as its owner keeps it).
async fn ensure<K>(api: &Api<K>, obj: serde_json::Value, t: &Target) -> Result<(), SyncError>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj).map_err(|e| t.invalid("metadata", e.to_string()))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        // The namespace is being deleted: nothing to publish into it.
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => Ok(()),
        Err(e) => Err(t.err("publishing")(e)),
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let t = Target::of("Namespace", ns.as_ref());
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let c = ctx.client.clone();
    ensure(
        &Api::<ServiceAccount>::namespaced(c.clone(), &name),
        json!({"metadata": {"name": "default", "namespace": name}}),
        &t,
    )
    .await?;
    let config_maps = Api::<ConfigMap>::namespaced(c.clone(), &name);
    ensure(
        &config_maps,
        json!({"metadata": {"name": ROOT_CA, "namespace": name,
            "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": ctx.published.ca_pem}}),
        &t,
    )
    .await?;
    // A CA made anew (the server's addresses changed) replaces the published one, as upstream's
    // root-CA publisher keeps it current.
    if let Ok(Some(cm)) = config_maps.get_opt(ROOT_CA).await
        && cm.data.as_ref().and_then(|d| d.get("ca.crt")) != Some(&ctx.published.ca_pem)
    {
        config_maps
            .patch(
                ROOT_CA,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"data": {"ca.crt": ctx.published.ca_pem}})),
            )
            .await
            .map_err(t.err("publishing"))?;
    }
    if name == "default" {
        let port = ctx.published.api.port();
        ensure(
            &Api::<Service>::namespaced(c.clone(), "default"),
            json!({"metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": "None", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}),
            &t,
        )
        .await?;
        ensure(
            &Api::<Endpoints>::namespaced(c, "default"),
            json!({"metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": [{"ip": ctx.published.api.ip().to_string()}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
            &t,
        )
        .await?;
    }
    // Deleted by someone: put back on the next resync, as upstream's publishers do.
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Run the publisher until `shutdown`.
pub async fn run(
    client: Client,
    published: Published,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        published,
    });
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown)
    .run(
        reconcile,
        |_, _, _| Action::requeue(Duration::from_secs(2)),
        ctx,
    )
    .for_each(|r| {
        match r {
            Ok((o, _)) => on_sync(Ok(o.name)),
            Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
            Err(e) => on_sync(Err(e.to_string())),
        }
        futures::future::ready(())
    })
    .await;
}
