//! The local PV controller (kube-controller-manager's `persistentvolume-binder`): binds claims
//! to volumes, asks external provisioners for volumes, marks volumes whose claims are gone
//! Released and claims whose volumes are gone Lost. What to do is [`plan::plan`], a pure
//! function of the claims, volumes, classes and nodes; [`run`] watches them through kube-rs and
//! carries the plan out (so it would work against any API server).
//!
//! Binding writes both sides, as upstream: the volume's `spec.claimRef` (with the claim's uid)
//! and phase `Bound`; the claim's `spec.volumeName`, `pv.kubernetes.io/bind-completed: "yes"`
//! (and `pv.kubernetes.io/bound-by-controller: "yes"` on whichever side the binder chose) and
//! status `{phase: Bound, capacity, accessModes}`.
//!
//! It also plays the pvc-protection and pv-protection controllers ([`protection`]): a claim
//! being deleted loses its finalizer once no running pod uses it, a volume once it is not Bound.

pub mod action;
pub mod default_class;
pub mod matching;
pub mod plan;
pub mod protection;
pub mod snapshots;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::recorder::{EventType, record};
use plan::{
    Action, BETA_STORAGE_PROVISIONER, BIND_COMPLETED, BOUND_BY_CONTROLLER, ClaimId,
    STORAGE_PROVISIONER, Severity, World,
};

/// The component events are recorded as.
pub const COMPONENT: &str = "persistentvolume-controller";

/// Even without a change, everything is looked at again this often.
const RESYNC: Duration = Duration::from_secs(15);

struct Binder {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    /// Events already recorded (claim uid, reason, message): each is told once.
    told: HashSet<(String, &'static str, String)>,
}

fn snapshot<K: Clone + kube::Resource<DynamicType = ()> + 'static>(s: &Store<K>) -> Vec<K> {
    let mut all: Vec<K> = s.state().iter().map(|o| (**o).clone()).collect();
    all.sort_by_key(|o| (o.meta().namespace.clone(), o.meta().name.clone()));
    all
}

/// Whether one of `pod`'s volumes is a PersistentVolumeClaim.
fn names_a_claim(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.persistent_volume_claim.is_some()))
}

impl Binder {
    async fn pass(&mut self, on_sync: &impl Fn(Result<String, String>)) {
        let claims = snapshot(&self.claims);
        let volumes = snapshot(&self.volumes);
        let classes = snapshot(&self.classes);
        let nodes = snapshot(&self.nodes);
        // Only pods that name a claim matter (they keep a claim in use); a node of VMs on
        // container disks has hundreds that do not, and each change of one runs a pass.
        let pods: Vec<Pod> = self
            .pods
            .state()
            .iter()
            .filter(|p| names_a_claim(p))
            .map(|p| (**p).clone())
            .collect();
        let world = World {
            claims: &claims,
            volumes: &volumes,
            classes: &classes,
            nodes: &nodes,
            pods: &pods,
        };
        for action in plan::plan(&world) {
            let what = format!("{action:?}");
            match self.act(&world, action).await {
                Ok(Some(done)) => on_sync(Ok(done)),
                Ok(None) => {}
                Err(e) => on_sync(Err(format!("{what}: {e}"))),
            }
        }
    }

    fn claim_api(&self, c: &ClaimId) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &c.namespace)
    }

    async fn act(&mut self, w: &World<'_>, action: Action) -> Result<Option<String>, kube::Error> {
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let pp = PatchParams::default();
        match action {
            Action::Bind {
                volume,
                claim,
                chose_volume,
                chose_claim,
            } => {
                let Some(pv) = w.volumes.iter().find(|v| v.name_any() == volume) else {
                    return Ok(None);
                };
                let mut pv_patch = json!({"spec": {"claimRef": {"kind": "PersistentVolumeClaim",
                    "apiVersion": "v1", "namespace": claim.namespace, "name": claim.name,
                    "uid": claim.uid}}});
                if chose_claim {
                    // Only the volume as read may be given away: a stale view gets a conflict
                    // (and the next pass looks again), never a second claim.
                    pv_patch["metadata"] = json!({"annotations": {BOUND_BY_CONTROLLER: "yes"},
                        "resourceVersion": pv.metadata.resource_version});
                }
                volumes
                    .patch(&volume, &pp, &Patch::Merge(&pv_patch))
                    .await?;
                volumes
                    .patch_status(
                        &volume,
                        &pp,
                        &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
                    )
                    .await?;
                let mut claim_patch = json!({"metadata": {"annotations": {BIND_COMPLETED: "yes"}},
                    "spec": {"volumeName": volume}});
                if chose_volume {
                    claim_patch["metadata"]["annotations"][BOUND_BY_CONTROLLER] = json!("yes");
                }
                let api = self.claim_api(&claim);
                api.patch(&claim.name, &pp, &Patch::Merge(&claim_patch))
                    .await?;
                let spec = pv.spec.clone().unwrap_or_default();
                api.patch_status(
                    &claim.name,
                    &pp,
                    &Patch::Merge(&json!({"status": {"phase": "Bound",
                        "capacity": spec.capacity, "accessModes": spec.access_modes}})),
                )
                .await?;
                Ok(Some(format!(
                    "bound {}/{} to volume {volume}",
                    claim.namespace, claim.name
                )))
            }
            Action::Available(name) => {
                volumes
                    .patch_status(
                        &name,
                        &pp,
                        &Patch::Merge(&json!({"status": {"phase": "Available"}})),
                    )
                    .await?;
                Ok(Some(format!("volume {name} available")))
            }
            Action::Unbind(name) => {
                volumes
                    .patch(
                        &name,
                        &pp,
                        &Patch::Merge(
                            &json!({"metadata": {"annotations": {BOUND_BY_CONTROLLER: null}},
                            "spec": {"claimRef": null}}),
                        ),
                    )
                    .await?;
                volumes
                    .patch_status(
                        &name,
                        &pp,
                        &Patch::Merge(&json!({"status": {"phase": "Available"}})),
                    )
                    .await?;
                Ok(Some(format!("volume {name} unbound")))
            }
            Action::Released(name) => {
                // The watch may lag: ask the server whether the claim is really gone.
                let Some(pv) = w.volumes.iter().find(|v| v.name_any() == name) else {
                    return Ok(None);
                };
                let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
                    return Ok(None);
                };
                let api: Api<PersistentVolumeClaim> = Api::namespaced(
                    self.client.clone(),
                    r.namespace.as_deref().unwrap_or("default"),
                );
                let current = api.get_opt(r.name.as_deref().unwrap_or_default()).await?;
                if current.is_some_and(|c| c.metadata.uid == r.uid) {
                    return Ok(None);
                }
                volumes
                    .patch_status(
                        &name,
                        &pp,
                        &Patch::Merge(&json!({"status": {"phase": "Released"}})),
                    )
                    .await?;
                Ok(Some(format!("volume {name} released")))
            }
            Action::Lost(claim) => {
                let Some(c) = w
                    .claims
                    .iter()
                    .find(|c| c.metadata.uid.as_deref() == Some(&claim.uid))
                else {
                    return Ok(None);
                };
                let named = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .unwrap_or_default();
                if let Some(pv) = volumes.get_opt(&named).await?
                    && pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .and_then(|r| r.uid.as_deref())
                        == Some(claim.uid.as_str())
                {
                    return Ok(None);
                }
                self.claim_api(&claim)
                    .patch_status(
                        &claim.name,
                        &pp,
                        &Patch::Merge(&json!({"status": {"phase": "Lost"}})),
                    )
                    .await?;
                record(
                    &self.client,
                    COMPONENT,
                    c,
                    EventType::Warning,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                )
                .await;
                Ok(Some(format!(
                    "claim {}/{} lost",
                    claim.namespace, claim.name
                )))
            }
            Action::Provision { claim, provisioner } => {
                self.claim_api(&claim)
                    .patch(
                        &claim.name,
                        &pp,
                        &Patch::Merge(&json!({"metadata": {"annotations": {
                            STORAGE_PROVISIONER: provisioner, BETA_STORAGE_PROVISIONER: provisioner}}})),
                    )
                    .await?;
                Ok(Some(format!(
                    "claim {}/{} waits for provisioner {provisioner}",
                    claim.namespace, claim.name
                )))
            }
            Action::AssignClass { claim, class } => {
                self.claim_api(&claim)
                    .patch(
                        &claim.name,
                        &pp,
                        &Patch::Merge(&json!({"spec": {"storageClassName": class}})),
                    )
                    .await?;
                Ok(Some(format!(
                    "claim {}/{} given the default class {class}",
                    claim.namespace, claim.name
                )))
            }
            Action::UnprotectClaim(claim) => {
                let Some(c) = w
                    .claims
                    .iter()
                    .find(|c| c.metadata.uid.as_deref() == Some(&claim.uid))
                else {
                    return Ok(None);
                };
                let patch = without_finalizer(&c.metadata, protection::PVC_PROTECTION);
                self.claim_api(&claim)
                    .patch(&claim.name, &pp, &Patch::Merge(&patch))
                    .await?;
                Ok(Some(format!(
                    "claim {}/{} no longer in use",
                    claim.namespace, claim.name
                )))
            }
            Action::UnprotectVolume(name) => {
                let Some(v) = w.volumes.iter().find(|v| v.name_any() == name) else {
                    return Ok(None);
                };
                let patch = without_finalizer(&v.metadata, protection::PV_PROTECTION);
                volumes.patch(&name, &pp, &Patch::Merge(&patch)).await?;
                Ok(Some(format!("volume {name} no longer bound")))
            }
            Action::Event {
                claim,
                severity,
                reason,
                message,
            } => {
                let key = (claim.uid.clone(), reason, message.clone());
                if self.told.contains(&key) {
                    return Ok(None);
                }
                let Some(c) = w
                    .claims
                    .iter()
                    .find(|c| c.metadata.uid.as_deref() == Some(&claim.uid))
                else {
                    return Ok(None);
                };
                let type_ = match severity {
                    Severity::Normal => EventType::Normal,
                    Severity::Warning => EventType::Warning,
                };
                record(&self.client, COMPONENT, c, type_, reason, &message).await;
                self.told.insert(key);
                Ok(None)
            }
        }
    }
}

/// A merge patch that drops `finalizer`, valid only against the version it was read at.
fn without_finalizer(meta: &kube::api::ObjectMeta, finalizer: &str) -> serde_json::Value {
    let rest: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}})
}

/// Run the binder until `shutdown` resolves; `on_sync` hears every change it makes.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_sync: impl Fn(Result<String, String>) + Send + 'static,
) {
    let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, volume_writer) = reflector::store::<PersistentVolume>();
    let (classes, class_writer) = reflector::store::<StorageClass>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let cfg = watcher::Config::default;
    let claim_events = watcher(Api::<PersistentVolumeClaim>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(claim_writer)
        .map(|_| ());
    let volume_events = watcher(Api::<PersistentVolume>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(volume_writer)
        .map(|_| ());
    let class_events = watcher(Api::<StorageClass>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(class_writer)
        .map(|_| ());
    let node_events = watcher(Api::<Node>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(node_writer)
        .map(|_| ());
    let pod_events = watcher(Api::<Pod>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(pod_writer)
        .map(|_| ());
    let ticks = futures::stream::unfold(tokio::time::interval(RESYNC), |mut i| async move {
        i.tick().await;
        Some(((), i))
    });
    let mut changes = futures::stream::select_all(vec![
        claim_events.boxed(),
        volume_events.boxed(),
        class_events.boxed(),
        node_events.boxed(),
        pod_events.boxed(),
        ticks.boxed(),
    ])
    .ready_chunks(256)
    .take_until(shutdown)
    .boxed();
    let mut b = Binder {
        client,
        claims: claims.clone(),
        volumes: volumes.clone(),
        classes: classes.clone(),
        nodes: nodes.clone(),
        pods: pods.clone(),
        told: HashSet::new(),
    };
    let ready = futures::future::join5(
        claims.wait_until_ready(),
        volumes.wait_until_ready(),
        classes.wait_until_ready(),
        nodes.wait_until_ready(),
        pods.wait_until_ready(),
    );
    tokio::pin!(ready);
    let mut have_all = false;
    while changes.next().await.is_some() {
        have_all = have_all || futures::poll!(&mut ready).is_ready();
        if have_all {
            b.pass(&on_sync).await;
        }
    }
}
