//! Runs [`super::plan`] for every VMI against an API server with kube-rs: a VMI is synced when it
//! changes, when a launcher pod it owns changes, when the node agent's grace for a finished pod
//! ends, and every few minutes. Pods are created with `generateName` (the API server names them
//! `virt-launcher-<vmi>-xxxxx`) and listed from the server (not a cache) before each decision,
//! so a sync never creates a second pod for a VMI. Status writes replace the VMI (it has no
//! status subresource, as upstream) with the resourceVersion read: a concurrent writer (the
//! node agent) wins and the sync is retried shortly. Before a pod is created, the claims the VMI
//! names are read (their volume modes decide mounts or devices); while one is missing there is
//! no pod and the VMI says which claim it waits for (upstream's `FailedPvcNotFound`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_api::core::v1::VirtualMachineInstance;

use super::events as note;
use super::render::claims::claim_volumes;
use super::render::{ClaimModes, PodConfig, pod_for_in};
use super::sync::{
    PodAction, claim_missing, data_volume_not_ready, data_volumes_ready, failed_create, plan,
};
use super::{APP_LABEL, APP_LAUNCHER, CREATED_BY_LABEL};
use crate::clusterconfig::ConfigHandle;
use crate::events::Recorder;
use crate::runtime::{SyncError, Target, tolerate_gone};
use crate::storage::claim::VolumeMode;

/// A VMI with nothing pending is synced again after this long anyway.
const RESYNC: Duration = Duration::from_secs(300);
/// A pod the API server refused is tried again after this long.
const RETRY_CREATE: Duration = Duration::from_secs(10);
/// A VMI waiting for a claim to appear looks again after this long (claims are not watched).
const WAIT_CLAIM: Duration = Duration::from_secs(3);
/// After a failed sync, the VMI is tried again after this long.
const RETRY: Duration = Duration::from_secs(2);

struct Context {
    client: Client,
    config: PodConfig,
    recorder: Recorder,
    /// The KubeVirt CR's configuration, live (the requests' ratios).
    cluster: ConfigHandle,
}

/// Runs the VMI controller until `shutdown` resolves: every VMI gets its virt-launcher pod,
/// rendered with `config` under the KubeVirt CR's configuration (watched meanwhile). `on_sync` sees each sync's outcome (for logging).
pub async fn run(
    client: Client,
    config: PodConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let launchers = watcher::Config::default().labels(&format!("{APP_LABEL}={APP_LAUNCHER}"));
    let context = Context {
        client: client.clone(),
        config,
        recorder: Recorder::new(client.clone(), note::COMPONENT),
        cluster: crate::clusterconfig::watch(client.clone()),
    };
    crate::runtime::run_with(
        client,
        context,
        shutdown,
        on_sync,
        reconcile,
        |c, client| c.owns(Api::<Pod>::all(client.clone()), launchers),
    )
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
    let mut missing = None;
    let mut unready = None;
    for action in &p.actions {
        match action {
            PodAction::Create => match claim_modes(&ctx.client, &target.namespace, &vmi).await {
                Err(e) => return Err(target.err("reading the claims of")(e)),
                Ok(Err(Waiting::Claim(absent))) => missing = Some(absent),
                Ok(Err(Waiting::DataVolume(dv, phase))) => unready = Some((dv, phase)),
                Ok(Ok(modes)) => {
                    match pod_for_in(&vmi, &ctx.config, &modes, &ctx.cluster.current()) {
                        Err(e) => refused = Some(e.to_string()),
                        Ok(pod) => match pods.create(&PostParams::default(), &pod).await {
                            Ok(made) => {
                                let made = note::pod_created(&made.name_any());
                                ctx.recorder.record(&*vmi, &made).await;
                            }
                            Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                                refused = Some(e.message);
                            }
                            Err(e) => {
                                let failed = note::pod_failed(&e.to_string());
                                ctx.recorder.record(&*vmi, &failed).await;
                                return Err(target.err("creating the launcher pod of")(e));
                            }
                        },
                    }
                }
            },
            PodAction::Delete { name, uid } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match tolerate_gone(pods.delete(name, &params).await) {
                    Ok(()) => ctx.recorder.record(&*vmi, &note::pod_deleted(name)).await,
                    Err(e) => {
                        let failed = note::pod_delete_failed(&e.to_string());
                        ctx.recorder.record(&*vmi, &failed).await;
                        return Err(target.err("deleting a launcher pod of")(e));
                    }
                }
            }
        }
    }
    if let Some(message) = &refused {
        ctx.recorder.record(&*vmi, &note::pod_failed(message)).await;
        failed_create(&mut p.status, message.clone(), now);
    }
    if let Some((dv, phase)) = &unready {
        data_volume_not_ready(&mut p.status, &target.namespace, dv, phase, now);
    } else if p.actions.contains(&PodAction::Create) && has_data_volumes(&vmi) {
        data_volumes_ready(&mut p.status, now);
    }
    if let Some(claim) = &missing {
        claim_missing(
            &mut p.status,
            vmi.status.as_ref(),
            &target.namespace,
            claim,
            now,
        );
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
    if missing.is_some() || unready.is_some() {
        return Ok(Requeue::requeue(WAIT_CLAIM));
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

/// What a VMI's pod waits for.
pub(crate) enum Waiting {
    /// A claim that does not exist.
    Claim(String),
    /// A DataVolume not populated yet: its name and phase.
    DataVolume(String, String),
}

/// DataVolume phases in which its claim may be used: populated, or waiting for its first
/// consumer (the pod is that consumer).
const DATA_VOLUME_USABLE: [&str; 3] = ["Succeeded", "WaitForFirstConsumer", "PendingPopulation"];

fn has_data_volumes(vmi: &VirtualMachineInstance) -> bool {
    vmi.spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.data_volume.is_some())
}

/// The volume mode of every claim `vmi` names, or what its pod waits for: a DataVolume not
/// populated yet (its claim would be empty or half-written), or a claim that does not exist.
pub(crate) async fn claim_modes(
    client: &Client,
    namespace: &str,
    vmi: &VirtualMachineInstance,
) -> Result<Result<ClaimModes, Waiting>, kube::Error> {
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), namespace);
    for v in vmi.spec.volumes.iter().flatten() {
        let Some(d) = &v.data_volume else { continue };
        if let Some(dv) = dvs.get_opt(&d.name).await? {
            let phase = dv
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            if !DATA_VOLUME_USABLE.contains(&phase.as_str()) {
                return Ok(Err(Waiting::DataVolume(d.name.clone(), phase)));
            }
        }
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let mut modes = ClaimModes::new();
    for c in claim_volumes(vmi) {
        if modes.contains_key(&c.claim) {
            continue;
        }
        let Some(claim) = claims.get_opt(&c.claim).await? else {
            return Ok(Err(Waiting::Claim(c.claim)));
        };
        // A mode the API would not accept reads as Filesystem; the provisioner refuses it.
        let mode = VolumeMode::parse(claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref()))
            .unwrap_or(VolumeMode::Filesystem);
        modes.insert(c.claim, mode);
    }
    Ok(Ok(modes))
}
