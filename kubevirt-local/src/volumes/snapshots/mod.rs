//! The common snapshot controller (the external-snapshotter's `snapshot-controller`, which a real
//! cluster runs as an add-on): binds VolumeSnapshots to VolumeSnapshotContents, creating the
//! content of a dynamic snapshot for its driver's snapshotter (ours is the node's provisioner,
//! kubevirt-controller `storage::snapshotter`), mirrors the content's status onto the snapshot,
//! and applies the deletion policy when a snapshot goes. [`plan::plan`] decides; [`run`] lists,
//! plans and acts whenever a snapshot, content, class, claim or PV changes.

pub mod install;
pub mod plan;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kubevirt_api::volumesnapshot::BEING_DELETED;
use kubevirt_api::volumesnapshot::v1::{
    VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent,
};
use serde_json::json;

use crate::recorder::{EventType, record};
use plan::{Action, SnapshotId, World};

/// The component events are recorded as.
pub const COMPONENT: &str = "snapshot-controller";

/// Even without a change, everything is looked at again this often.
const RESYNC: Duration = Duration::from_secs(15);

struct Controller {
    client: Client,
    /// Errors already told as events (snapshot uid, message).
    told: HashSet<(String, String)>,
}

impl Controller {
    async fn pass(&mut self, on_sync: &impl Fn(Result<String, String>)) -> Result<(), kube::Error> {
        let lp = ListParams::default();
        let snapshots = Api::<VolumeSnapshot>::all(self.client.clone())
            .list(&lp)
            .await?
            .items;
        let contents = Api::<VolumeSnapshotContent>::all(self.client.clone())
            .list(&lp)
            .await?
            .items;
        let classes = Api::<VolumeSnapshotClass>::all(self.client.clone())
            .list(&lp)
            .await?
            .items;
        let claims = Api::<PersistentVolumeClaim>::all(self.client.clone())
            .list(&lp)
            .await?
            .items;
        let volumes = Api::<PersistentVolume>::all(self.client.clone())
            .list(&lp)
            .await?
            .items;
        let world = World {
            snapshots: &snapshots,
            contents: &contents,
            classes: &classes,
            claims: &claims,
            volumes: &volumes,
        };
        let by_id = plan::by_id(&snapshots);
        for action in plan::plan(&world) {
            let what = format!("{action:?}");
            match self.act(&by_id, action).await {
                Ok(Some(done)) => on_sync(Ok(done)),
                Ok(None) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => on_sync(Err(format!("{what}: {e}"))),
            }
        }
        Ok(())
    }

    fn snapshots(&self, id: &SnapshotId) -> Api<VolumeSnapshot> {
        Api::namespaced(self.client.clone(), &id.namespace)
    }

    async fn act(
        &mut self,
        by_id: &std::collections::BTreeMap<SnapshotId, &VolumeSnapshot>,
        action: Action,
    ) -> Result<Option<String>, kube::Error> {
        let pp = PatchParams::default();
        let contents: Api<VolumeSnapshotContent> = Api::all(self.client.clone());
        match action {
            Action::Finalizers {
                snapshot,
                finalizers,
                version,
            } => {
                let patch =
                    json!({"metadata": {"finalizers": finalizers, "resourceVersion": version}});
                self.snapshots(&snapshot)
                    .patch(&snapshot.name, &pp, &Patch::Merge(&patch))
                    .await?;
                Ok(None)
            }
            Action::SetClass { snapshot, class } => {
                let patch = json!({"spec": {"volumeSnapshotClassName": class}});
                self.snapshots(&snapshot)
                    .patch(&snapshot.name, &pp, &Patch::Merge(&patch))
                    .await?;
                Ok(Some(format!(
                    "VolumeSnapshot {}/{} given the default class {class}",
                    snapshot.namespace, snapshot.name
                )))
            }
            Action::CreateContent(content) => {
                let name = content.name_any();
                match contents.create(&PostParams::default(), &content).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => return Ok(None),
                    Err(e) => return Err(e),
                }
                Ok(Some(format!("created VolumeSnapshotContent {name}")))
            }
            Action::BindContent { content, uid } => {
                let patch = json!({"spec": {"volumeSnapshotRef": {"uid": uid}}});
                contents.patch(&content, &pp, &Patch::Merge(&patch)).await?;
                Ok(Some(format!("VolumeSnapshotContent {content} bound")))
            }
            Action::Status { snapshot, status } => {
                let patch = json!({"status": status});
                self.snapshots(&snapshot)
                    .patch_status(&snapshot.name, &pp, &Patch::Merge(&patch))
                    .await?;
                Ok(Some(format!(
                    "VolumeSnapshot {}/{}: content {}, readyToUse {}",
                    snapshot.namespace,
                    snapshot.name,
                    status
                        .bound_volume_snapshot_content_name
                        .unwrap_or_default(),
                    status.ready_to_use.unwrap_or(false)
                )))
            }
            Action::Error {
                snapshot,
                reason,
                message,
            } => {
                let time =
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
                let patch = json!({"status": {"readyToUse": false,
                    "error": {"time": time, "message": message}}});
                self.snapshots(&snapshot)
                    .patch_status(&snapshot.name, &pp, &Patch::Merge(&patch))
                    .await?;
                if let Some(vs) = by_id.get(&snapshot) {
                    let key = (vs.metadata.uid.clone().unwrap_or_default(), message.clone());
                    if self.told.insert(key) {
                        record(
                            &self.client,
                            COMPONENT,
                            *vs,
                            EventType::Warning,
                            reason,
                            &message,
                        )
                        .await;
                    }
                }
                Ok(Some(format!(
                    "VolumeSnapshot {}/{}: {message}",
                    snapshot.namespace, snapshot.name
                )))
            }
            Action::DeleteContent(name) => {
                let patch = json!({"metadata": {"annotations": {BEING_DELETED: "yes"}}});
                contents.patch(&name, &pp, &Patch::Merge(&patch)).await?;
                match contents.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
                Ok(Some(format!(
                    "deleted VolumeSnapshotContent {name} (deletionPolicy Delete)"
                )))
            }
        }
    }
}

/// Run the snapshot controller until `shutdown` resolves; `on_sync` hears every change it
/// makes. The snapshot CRDs must be installed ([`install::ensure_snapshot_api`]).
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_sync: impl Fn(Result<String, String>) + Send + 'static,
) {
    let cfg = watcher::Config::default;
    let ticks = |s: watcher::Result<()>| futures::future::ready(s.ok());
    let snapshots = watcher(Api::<VolumeSnapshot>::all(client.clone()), cfg())
        .default_backoff()
        .map(|r| r.map(drop))
        .filter_map(ticks);
    let contents = watcher(Api::<VolumeSnapshotContent>::all(client.clone()), cfg())
        .default_backoff()
        .map(|r| r.map(drop))
        .filter_map(ticks);
    let classes = watcher(Api::<VolumeSnapshotClass>::all(client.clone()), cfg())
        .default_backoff()
        .map(|r| r.map(drop))
        .filter_map(ticks);
    let claims = watcher(Api::<PersistentVolumeClaim>::all(client.clone()), cfg())
        .default_backoff()
        .map(|r| r.map(drop))
        .filter_map(ticks);
    let volumes = watcher(Api::<PersistentVolume>::all(client.clone()), cfg())
        .default_backoff()
        .map(|r| r.map(drop))
        .filter_map(ticks);
    let resync = futures::stream::unfold(tokio::time::interval(RESYNC), |mut i| async move {
        i.tick().await;
        Some(((), i))
    });
    let mut changes = futures::stream::select_all(vec![
        snapshots.boxed(),
        contents.boxed(),
        classes.boxed(),
        claims.boxed(),
        volumes.boxed(),
        resync.boxed(),
    ])
    .ready_chunks(256)
    .take_until(shutdown)
    .boxed();
    let mut c = Controller {
        client,
        told: HashSet::new(),
    };
    while changes.next().await.is_some() {
        match c.pass(&on_sync).await {
            Ok(()) => {}
            // The snapshot CRDs are not installed (a plane started without `up`): nothing to do.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => on_sync(Err(format!("a snapshot pass: {e}"))),
        }
    }
}
