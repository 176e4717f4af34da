//! Runs [`super::sync::plan`] for every DataVolume against an API server with kube-rs: a
//! DataVolume is synced when it changes, when its claim or importer pod changes, and every few
//! seconds while its import runs (to read the progress).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubevirt_api::cdi::v1beta1::DataVolume;

use super::DataVolumeConfig;
use super::claim::owner;
use super::events::{COMPONENT, transition};
use super::importer::{Source, pod_name_for, running_ip, source_of};
use super::progress::scrape;
use super::sync::{Observed, plan};
use crate::events::Recorder;
use crate::runtime::{SyncError, Target, tolerate_gone, write_status};

/// While an import runs, its progress is read this often.
const PROGRESS_POLL: Duration = Duration::from_secs(2);
/// A DataVolume with nothing running is synced again after this long anyway.
const RESYNC: Duration = Duration::from_secs(300);

struct Context {
    client: Client,
    config: DataVolumeConfig,
    recorder: Recorder,
}

/// Runs the DataVolume controller until `shutdown` resolves; `on_sync` hears each outcome.
pub async fn run(
    client: Client,
    config: DataVolumeConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let context = Context {
        client: client.clone(),
        config,
        recorder: Recorder::new(client.clone(), COMPONENT),
    };
    crate::runtime::run_with(
        client,
        context,
        shutdown,
        on_sync,
        reconcile,
        |c, client| {
            c.owns(
                Api::<PersistentVolumeClaim>::all(client.clone()),
                watcher::Config::default(),
            )
            .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        },
    )
    .await;
}

async fn reconcile(dv: Arc<DataVolume>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    // Deleting a DataVolume deletes its claim and pod through their owner references.
    if dv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let target = Target::of(&*dv)?;
    let (namespace, name) = (&target.namespace, &target.name);
    let client = &ctx.client;
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(name)
        .await
        .map_err(target.err("reading the claim of"))?;
    let pod_name = pod_name_for(source_of(&dv).ok().as_ref(), name);
    let pod = pods
        .get_opt(&pod_name)
        .await
        .map_err(target.err("reading the importer pod of"))?
        // A pod of that name that is not this DataVolume's is not its importer.
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == dv.metadata.uid.as_ref())
        });
    // A clone's source claim (same namespace).
    let clones = matches!(source_of(&dv), Ok(Source::Clone(_)));
    let source_claim = match source_of(&dv) {
        Ok(Source::Clone(p)) => claims
            .get_opt(&p.name)
            .await
            .map_err(target.err("reading the clone source of"))?,
        _ => None,
    };
    let config = match source_of(&dv) {
        Ok(Source::Registry(_)) => with_cdi_config(&ctx.config, client).await,
        _ => ctx.config.clone(),
    };
    let progress = match pod.as_ref().and_then(running_ip) {
        Some(ip) => scrape(ip, dv.metadata.uid.as_deref().unwrap_or_default()).await,
        None => None,
    };
    // A claim still to make from `spec.storage` takes its class's StorageProfile's defaults.
    let profile = match (&claim, &dv.spec.storage) {
        (None, Some(storage)) => {
            let class = match &storage.storage_class_name {
                Some(c) => Some(c.clone()),
                None => crate::cdi::storageprofile::controller::default_class(client).await,
            };
            match class {
                Some(c) => crate::cdi::storageprofile::controller::get(client, &c)
                    .await
                    .filter(|p| p["status"]["provisioner"].is_string())
                    .map(|p| crate::cdi::storageprofile::profile_of(&p)),
                None => None,
            }
        }
        _ => None,
    };
    let p = plan(Observed {
        dv: &dv,
        claim: claim.as_ref(),
        pod: pod.as_ref(),
        source_claim: source_claim.as_ref(),
        profile: profile.as_ref(),
        progress,
        config: &config,
        now: Timestamp::now(),
    });
    if let Some(c) = &p.create_claim {
        ignore_exists(claims.create(&PostParams::default(), c).await)
            .map_err(target.err("creating the claim of"))?;
    }
    if p.adopt_claim {
        let patch = serde_json::json!({"metadata": {"ownerReferences": [owner(&dv)]}});
        tolerate_gone(
            claims
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(target.err("adopting the claim of"))?;
    }
    if !p.annotate_claim.is_empty() {
        let patch = serde_json::json!({"metadata": {"annotations": p.annotate_claim}});
        tolerate_gone(
            claims
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )
        .map_err(target.err("marking the claim of"))?;
    }
    if let Some(pod) = &p.create_pod {
        ignore_exists(pods.create(&PostParams::default(), pod).await)
            .map_err(target.err("creating the importer pod of"))?;
    }
    if p.delete_pod {
        tolerate_gone(pods.delete(&pod_name, &DeleteParams::default()).await)
            .map_err(target.err("deleting the importer pod of"))?;
    }
    if dv.status.as_ref() != Some(&p.status) {
        let mut updated = (*dv).clone();
        updated.status = Some(p.status.clone());
        write_status(&dvs, &updated)
            .await
            .map_err(target.err("writing the status of"))?;
        // Told once the new status is written (a refused write is retried, and tells then).
        for note in transition(&dv, dv.status.as_ref(), &p.status) {
            ctx.recorder.record(&*dv, &note).await;
        }
    }
    Ok(match p.status.phase.as_deref() {
        Some("ImportInProgress" | "ImportScheduled" | "CloneInProgress" | "CloneScheduled") => {
            Action::requeue(PROGRESS_POLL)
        }
        // A clone waits for its source, which is not this DataVolume's to watch.
        Some("Pending") if clones => Action::requeue(PROGRESS_POLL),
        _ => Action::requeue(RESYNC),
    })
}

/// `config` with the insecure registries of the cluster's CDIConfig `config` (upstream's
/// `spec.insecureRegistries`), when the API serves one.
async fn with_cdi_config(config: &DataVolumeConfig, client: &Client) -> DataVolumeConfig {
    let mut config = config.clone();
    let Ok(req) =
        http::Request::get("/apis/cdi.kubevirt.io/v1beta1/cdiconfigs/config").body(Vec::new())
    else {
        return config;
    };
    if let Ok(cdi) = client.request::<serde_json::Value>(req).await {
        for r in cdi["spec"]["insecureRegistries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
        {
            if !config.insecure_registries.iter().any(|h| h == r) {
                config.insecure_registries.push(r.to_string());
            }
        }
    }
    config
}

/// A create that finds the object made meanwhile is no error: the watch brings it.
fn ignore_exists<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
