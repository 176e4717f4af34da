//! Runs [`plan`] against an API server: a pass lists the claims, PVs and StorageClasses (from
//! the server, not a cache, so a pass never repeats work a previous one did) and reads the
//! storage root, then carries out each [`Action`]. A pass runs at start (re-attaching Block
//! volumes after a reboot), whenever a claim, PV or class changes, and every minute.
//!
//! Every step is idempotent: a volume already made is found and kept, a PV that exists is no
//! error, a volume already removed is fine. Refusals and outcomes are events on the claim
//! (upstream's reasons: `ProvisioningSucceeded`, `ProvisioningFailed`, `VolumeResizeSuccessful`,
//! `VolumeResizeFailed`).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use kubevirt_api::volumesnapshot::v1::{VolumeSnapshot, VolumeSnapshotContent};
use serde_json::json;

use super::PROVISIONER;
use super::disk::{self, DiskError};
use super::loopdev;
use super::plan::{Action, Observed, Scope, plan};
use super::plan::{PROVISIONING_FAILED, RESIZE_FAILED};
use super::snapshots;
use super::snapshotter;
use crate::events::{EventType, Note, Recorder};

/// A pass with nothing to wake it runs after this long anyway.
const RESYNC: Duration = Duration::from_secs(60);
/// After a failed pass, the next runs after this long.
const RETRY: Duration = Duration::from_secs(5);
/// Changes arriving within this long of each other share one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// What one node's provisioner serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionerConfig {
    /// This node's name: claims whose `volume.kubernetes.io/selected-node` names it, and the
    /// `kubernetes.io/hostname` affinity of its PVs.
    pub node_name: String,
    /// The storage root ([`super::DEFAULT_ROOT`] on a cluster node).
    pub root: PathBuf,
    /// Also provision claims of Immediate classes (no selected node): for one instance of a
    /// cluster, typically a single-node one.
    pub immediate: bool,
}

/// Why a pass or one of its actions failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The storage root could not be read or changed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A volume could not be filled from its snapshot.
    #[error("{0}")]
    Restore(String),
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ProvisionError {
    let what = what.into();
    move |source| ProvisionError::Api {
        what,
        source: Box::new(source),
    }
}

struct Context {
    client: Client,
    scope: Scope,
    recorder: Recorder,
    /// The refusal last told to each claim (by uid): the same one is not repeated every pass.
    told: HashMap<String, String>,
}

/// Runs the provisioner of `config.node_name` until `shutdown` resolves; `on_sync` hears each
/// action's outcome (for logging). Loop devices stay attached when it stops (their volumes may be
/// in use): [`super::detach_all`] detaches them.
pub async fn run(
    client: Client,
    config: ProvisionerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_sync: impl Fn(Result<String, String>) + Send + 'static,
) {
    let root = match disk::prepare_root(&config.root) {
        Ok(r) => r,
        Err(e) => {
            on_sync(Err(format!("the storage root: {e}")));
            return;
        }
    };
    let mut ctx = Context {
        recorder: Recorder::new(client.clone(), PROVISIONER).on_host(config.node_name.clone()),
        client: client.clone(),
        scope: Scope {
            node: config.node_name,
            root,
            immediate: config.immediate,
        },
        told: HashMap::new(),
    };
    let mut changes = changes(&client);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let mut failed = match pass(&mut ctx).await {
            Ok(outcomes) => {
                let failed = outcomes.iter().any(Result::is_err);
                outcomes.into_iter().for_each(&on_sync);
                failed
            }
            Err(e) => {
                on_sync(Err(e.to_string()));
                true
            }
        };
        // The snapshotter of this node's volumes (the CSI snapshotter's role).
        match snapshotter::pass(&ctx.client, &ctx.scope).await {
            Ok(outcomes) => {
                failed |= outcomes.iter().any(Result::is_err);
                outcomes.into_iter().for_each(&on_sync);
            }
            Err(e) => {
                on_sync(Err(e.to_string()));
                failed = true;
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = changes.next() => {}
            _ = tokio::time::sleep(if failed { RETRY } else { RESYNC }) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
        while let Some(Some(())) = changes.next().now_or_never() {}
    }
}

/// A tick for every change of a claim, PV, StorageClass, VolumeSnapshot or content.
fn changes(client: &Client) -> impl Stream<Item = ()> + Send + Unpin + use<> {
    let pvcs = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(drop);
    let pvs = watcher(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(drop);
    let classes = watcher(
        Api::<StorageClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(drop);
    // The snapshot kinds may not be served (no external-snapshotter): their errors wake nothing.
    let contents = watcher(
        Api::<VolumeSnapshotContent>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|r| futures::future::ready(r.ok().map(drop)));
    let snapshots = watcher(
        Api::<VolumeSnapshot>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .filter_map(|r| futures::future::ready(r.ok().map(drop)));
    futures::stream::select_all([
        pvcs.boxed(),
        pvs.boxed(),
        classes.boxed(),
        contents.boxed(),
        snapshots.boxed(),
    ])
}

/// One pass: observe, plan, act. The outcome of each action.
async fn pass(ctx: &mut Context) -> Result<Vec<Result<String, String>>, ProvisionError> {
    let lp = ListParams::default();
    let claims = Api::<PersistentVolumeClaim>::all(ctx.client.clone())
        .list(&lp)
        .await
        .map_err(api("listing PersistentVolumeClaims"))?
        .items;
    let volumes = Api::<PersistentVolume>::all(ctx.client.clone())
        .list(&lp)
        .await
        .map_err(api("listing PersistentVolumes"))?
        .items;
    let classes = Api::<StorageClass>::all(ctx.client.clone())
        .list(&lp)
        .await
        .map_err(api("listing StorageClasses"))?
        .items;
    let snapshots = optional(
        Api::<VolumeSnapshot>::all(ctx.client.clone())
            .list(&lp)
            .await,
        "listing VolumeSnapshots",
    )?;
    let contents = optional(
        Api::<VolumeSnapshotContent>::all(ctx.client.clone())
            .list(&lp)
            .await,
        "listing VolumeSnapshotContents",
    )?;
    let root = ctx.scope.root.clone();
    let disk = blocking(move || disk::observe(&root)).await?;
    let seen = Observed {
        claims: &claims,
        volumes: &volumes,
        classes: &classes,
        disk: &disk,
        snapshots: &snapshots,
        contents: &contents,
    };
    let actions = plan(&ctx.scope, seen);
    let mut outcomes = Vec::new();
    for action in actions {
        if let Some(outcome) = act(ctx, action).await {
            outcomes.push(outcome.map_err(|e| e.to_string()));
        }
    }
    // Claims gone or served are not remembered.
    let live: std::collections::HashSet<&str> = claims
        .iter()
        .filter_map(|c| c.metadata.uid.as_deref())
        .collect();
    ctx.told.retain(|uid, _| live.contains(uid.as_str()));
    Ok(outcomes)
}

/// The items of a list of a kind the cluster may not serve (the snapshot CRDs are the
/// external-snapshotter's) or may not let us read (an older manifest's RBAC): none then.
fn optional<K>(
    listed: Result<kube::core::ObjectList<K>, kube::Error>,
    what: &str,
) -> Result<Vec<K>, ProvisionError>
where
    K: Clone,
{
    match listed {
        Ok(l) => Ok(l.items),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => Ok(Vec::new()),
        Err(e) => Err(api(what)(e)),
    }
}

/// Carries out one action; `None` for one not worth a line (a refusal already told).
async fn act(ctx: &mut Context, action: Action) -> Option<Result<String, ProvisionError>> {
    let root = ctx.scope.root.clone();
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    Some(match action {
        Action::Provision { claim, volume, pv } => provision(ctx, claim, volume, pv, None).await,
        Action::Restore {
            claim,
            volume,
            pv,
            snapshot,
        } => provision(ctx, claim, volume, pv, Some(snapshot)).await,
        Action::Refuse {
            claim,
            reason,
            message,
        } => {
            if !warn_once(ctx, &claim, reason, &message).await {
                return None;
            }
            Ok(format!("{}: {reason}: {message}", describe(&claim)))
        }
        Action::Reclaim { pv, uid } => {
            let name = pv.clone();
            if let Err(e) = blocking(move || disk::remove(&root, &name)).await {
                return Some(Err(e));
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pvs.delete(&pv, &params).await {
                Ok(_) => Ok(format!("deleted the volume {pv} and its PersistentVolume")),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    Ok(format!("deleted the volume {pv}"))
                }
                Err(e) => Err(api(format!("deleting the PersistentVolume {pv}"))(e)),
            }
        }
        Action::Attach { volume } => {
            let name = volume.clone();
            blocking(move || disk::attach(&root, &name))
                .await
                .map(|d| format!("attached the volume {volume} to {}", d.display()))
        }
        Action::Detach { device, why } => {
            let d = device.clone();
            blocking(move || loopdev::detach(&d).map_err(DiskError::from))
                .await
                .map(|()| format!("detached {} ({why})", device.display()))
        }
        Action::Grow {
            claim,
            volume,
            capacity,
            claim_status,
        } => {
            let grown = {
                let (root, volume) = (root.clone(), volume.clone());
                blocking(move || disk::grow(&root, &volume)).await
            };
            if let Err(e) = grown {
                let message = format!("growing the volume {}: {e}", volume.name);
                warn_once(ctx, &claim, RESIZE_FAILED, &message).await;
                return Some(Err(e));
            }
            let patch = json!({"spec": {"capacity": {"storage": capacity}}});
            if let Err(e) = pvs
                .patch(&volume.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                return Some(Err(api(format!(
                    "writing the capacity of PersistentVolume {}",
                    volume.name
                ))(e)));
            }
            if let Err(e) = claim_status_patch(ctx, &claim, &claim_status).await {
                return Some(Err(e));
            }
            let message = format!("resize volume {} to {} successful", volume.name, capacity.0);
            tell(
                ctx,
                &claim,
                EventType::Normal,
                "VolumeResizeSuccessful",
                &message,
            )
            .await;
            Ok(format!("{message} for {}", describe(&claim)))
        }
        Action::SetClaimCapacity {
            claim,
            claim_status,
        } => claim_status_patch(ctx, &claim, &claim_status)
            .await
            .map(|()| format!("{}: capacity written", describe(&claim))),
    })
}

/// Makes the volume (filled from `snapshot` first, if given) and creates its PV; tells the
/// claim how it went.
async fn provision(
    ctx: &mut Context,
    claim: ObjectReference,
    volume: disk::Volume,
    pv: Box<PersistentVolume>,
    snapshot: Option<String>,
) -> Result<String, ProvisionError> {
    let root = ctx.scope.root.clone();
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if let Some(handle) = &snapshot {
        let (root, handle, v) = (root.clone(), handle.clone(), volume.clone());
        let restored = tokio::task::spawn_blocking(move || snapshots::restore(&root, &handle, &v))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = restored {
            let message = format!("restoring the volume {} from snapshot: {e}", volume.name);
            warn_once(ctx, &claim, PROVISIONING_FAILED, &message).await;
            return Err(ProvisionError::Restore(message));
        }
    }
    let made = {
        let (root, volume) = (root.clone(), volume.clone());
        blocking(move || disk::make(&root, &volume)).await
    };
    let device = match made {
        Ok(d) => d,
        Err(e) => {
            let message = format!("making the volume {}: {e}", volume.name);
            warn_once(ctx, &claim, PROVISIONING_FAILED, &message).await;
            return Err(e);
        }
    };
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            let message = format!("creating the PersistentVolume {}: {e}", volume.name);
            warn_once(ctx, &claim, PROVISIONING_FAILED, &message).await;
            return Err(api(message)(e));
        }
    }
    let on = match &device {
        Some(d) => format!(" ({}, {})", volume.mode.as_str(), d.display()),
        None => format!(" ({})", volume.mode.as_str()),
    };
    let from = snapshot
        .map(|h| format!(" from snapshot {h}"))
        .unwrap_or_default();
    let message = format!("Successfully provisioned volume {}{on}{from}", volume.name);
    tell(
        ctx,
        &claim,
        EventType::Normal,
        "ProvisioningSucceeded",
        &message,
    )
    .await;
    Ok(format!("{message} for {}", describe(&claim)))
}

async fn claim_status_patch(
    ctx: &Context,
    claim: &ObjectReference,
    patch: &serde_json::Value,
) -> Result<(), ProvisionError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(
        ctx.client.clone(),
        claim.namespace.as_deref().unwrap_or_default(),
    );
    let name = claim.name.as_deref().unwrap_or_default();
    claims
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(api(format!("writing the status of {}", describe(claim))))
}

/// A warning on `claim`, unless the last one told to it was the same (a pass that keeps failing
/// repeats itself in the log, not in the claim's events). Whether it was told.
async fn warn_once(
    ctx: &mut Context,
    claim: &ObjectReference,
    reason: &'static str,
    message: &str,
) -> bool {
    let uid = claim.uid.clone().unwrap_or_default();
    if ctx.told.get(&uid).is_some_and(|m| m == message) {
        return false;
    }
    tell(ctx, claim, EventType::Warning, reason, message).await;
    ctx.told.insert(uid, message.to_string());
    true
}

/// An event on `claim` (through the controllers' shared recorder: a failure to write it is only
/// logged, the action's outcome stands).
async fn tell(
    ctx: &Context,
    claim: &ObjectReference,
    type_: EventType,
    reason: &'static str,
    message: &str,
) {
    let note = Note {
        type_,
        reason,
        message: message.to_string(),
    };
    ctx.recorder.record_ref(claim, &note).await;
}

fn describe(claim: &ObjectReference) -> String {
    format!(
        "{} {}/{}",
        PersistentVolumeClaim::kind(&()),
        claim.namespace.as_deref().unwrap_or_default(),
        claim.name.as_deref().unwrap_or_default()
    )
}

/// Runs disk work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DiskError> + Send + 'static,
) -> Result<T, ProvisionError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ProvisionError::from),
        Err(e) => Err(ProvisionError::Disk(DiskError::Io {
            what: "a disk task of",
            path: PathBuf::from("the storage root"),
            source: std::io::Error::other(e.to_string()),
        })),
    }
}
