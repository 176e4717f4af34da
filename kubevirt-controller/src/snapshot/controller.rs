//! Runs the VirtualMachineSnapshot decisions against an API server with kube-rs: one sync of a
//! snapshot takes (or lets go) its VM's lock, creates its content, cuts the content's
//! VolumeSnapshots (pausing a running guest meanwhile), writes the content's and the snapshot's
//! status, and on deletion deletes or keeps the content per `deletionPolicy`. (Upstream splits
//! the content's part into a second controller; here the snapshot's sync does both, and a
//! retained content whose snapshot is gone needs nothing more.)

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceSpec};
use kubevirt_api::snapshot::v1beta1::{VirtualMachineSnapshot, VirtualMachineSnapshotContent};
use kubevirt_api::volumesnapshot::v1::{VolumeSnapshot, VolumeSnapshotClass};
use serde_json::json;

use super::events;
use super::status::{self, Facts, Source};
use super::vsnap::{self, Progress};
use super::{
    CONTENT_FINALIZER, PAUSED_VMI_ANNOTATION, SNAPSHOT_FINALIZER, SOURCE_FINALIZER, content,
    content_name, has_finalizer, lock, memory, volumes,
};
use crate::events::Recorder;
use crate::runtime::{SyncError, Target, tolerate_gone, write_status};

/// While a snapshot is being taken (or its content is not ready) it is synced this often.
const POLL: Duration = Duration::from_secs(2);
/// A finished snapshot is synced again after this long anyway.
const RESYNC: Duration = Duration::from_secs(300);

/// Runs the snapshot controller until `shutdown` resolves; `on_sync` hears each outcome.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let recorder = Recorder::new(client.clone(), events::SNAPSHOT_COMPONENT);
    crate::runtime::run_with(
        client.clone(),
        client,
        shutdown,
        on_sync,
        move |s, client| reconcile(s, client, recorder.clone()),
        |c, _| c,
    )
    .await;
}

/// The APIs of one namespace.
struct Apis {
    snapshots: Api<VirtualMachineSnapshot>,
    contents: Api<VirtualMachineSnapshotContent>,
    vms: Api<VirtualMachine>,
    vmis: Api<VirtualMachineInstance>,
    volume_snapshots: Api<VolumeSnapshot>,
    client: Client,
    namespace: String,
    recorder: Recorder,
}

impl Apis {
    fn new(client: &Client, namespace: &str, recorder: Recorder) -> Self {
        Self {
            recorder,
            snapshots: Api::namespaced(client.clone(), namespace),
            contents: Api::namespaced(client.clone(), namespace),
            vms: Api::namespaced(client.clone(), namespace),
            vmis: Api::namespaced(client.clone(), namespace),
            volume_snapshots: Api::namespaced(client.clone(), namespace),
            client: client.clone(),
            namespace: namespace.to_string(),
        }
    }
}

async fn reconcile(
    s: Arc<VirtualMachineSnapshot>,
    client: Arc<Client>,
    recorder: Recorder,
) -> Result<Action, SyncError> {
    let target = Target::of(&*s)?;
    let apis = Apis::new(&client, &target.namespace, recorder);
    let name = target.name.as_str();
    let now = Timestamp::now();
    let uid = s.metadata.uid.clone().unwrap_or_default();
    let terminating = status::terminating(&s, now);
    let deleting = s.metadata.deletion_timestamp.is_some();
    if !terminating && !has_finalizer(&s.metadata, SNAPSHOT_FINALIZER) {
        set_finalizer(&apis.snapshots, &s.metadata, SNAPSHOT_FINALIZER, true)
            .await
            .map_err(target.err("adding the finalizer of"))?;
        return Ok(Action::requeue(Duration::ZERO));
    }
    let vm = match s.spec.source.kind.as_str() {
        "VirtualMachine" => apis
            .vms
            .get_opt(&s.spec.source.name)
            .await
            .map_err(target.err("reading the source of"))?,
        _ => None,
    };
    let vmi = match &vm {
        Some(_) => apis
            .vmis
            .get_opt(&s.spec.source.name)
            .await
            .map_err(target.err("reading the source instance of"))?,
        None => None,
    };
    let content_name = s
        .status
        .as_ref()
        .and_then(|st| st.virtual_machine_snapshot_content_name.clone())
        .unwrap_or_else(|| content_name(&uid));
    let mut content = apis
        .contents
        .get_opt(&content_name)
        .await
        .map_err(target.err("reading the content of"))?;

    let mut blocker = String::new();
    let mut failure = None;
    let mut locked = vm.as_ref().is_some_and(|v| lock::snapshot_holds(v, name));
    if let Some(vm) = &vm {
        if status::progressing(&s) && !terminating {
            if !locked {
                let claims = claims_in(&apis)
                    .await
                    .map_err(target.err("reading the claims of"))?;
                let dvs = data_volumes_in(&apis)
                    .await
                    .map_err(target.err("reading the DataVolumes of"))?;
                match lock::snapshot_blocker(vm, name, &claims, &dvs) {
                    Some(b) => blocker = b,
                    None => {
                        take_lock(&apis, vm, name)
                            .await
                            .map_err(target.err("locking the source of"))?;
                        locked = true;
                    }
                }
            }
            if locked && content.is_none() {
                let inclusion = inclusion(&apis, vm)
                    .await
                    .map_err(target.err("reading the storage classes of"))?;
                let vm_key = format!("{}/{}", apis.namespace, s.spec.source.name);
                match inclusion.nothing_snapshottable(&vm_key) {
                    Some(m) => failure = Some(m),
                    None => {
                        let c = content::build(&s, vm, &inclusion.included);
                        let (made, new) = create_or_get(&apis.contents, &c)
                            .await
                            .map_err(target.err("creating the content of"))?;
                        if new {
                            let note = events::content_created(&made.name_any());
                            apis.recorder.record(&*s, &note).await;
                        }
                        content = Some(made);
                    }
                }
            }
        } else {
            let content_settled = content
                .as_ref()
                .is_none_or(|c| !status::deletes_content(&s, c));
            if !status::progressing(&s) || (terminating && content_settled) {
                release_lock(&apis, vm, name)
                    .await
                    .map_err(target.err("unlocking the source of"))?;
                locked = false;
            }
        }
    }

    // The content's part: cut its volumes while the snapshot runs, then follow them.
    if let Some(c) = content.as_mut()
        && c.metadata.deletion_timestamp.is_none()
    {
        let cut_allowed = locked && !terminating && failure.is_none();
        let template = vm.as_ref().and_then(|v| v.spec.template.spec.as_ref());
        sync_content(&apis, (&s, template), c, vmi.as_ref(), cut_allowed, now)
            .await
            .map_err(target.err("cutting the volumes of"))?;
    }
    if terminating && let Some(c) = &content {
        unpause(&apis, c, vmi.as_ref())
            .await
            .map_err(target.err("unpausing the source of"))?;
        if has_finalizer(&c.metadata, CONTENT_FINALIZER) {
            set_finalizer(&apis.contents, &c.metadata, CONTENT_FINALIZER, false)
                .await
                .map_err(target.err("releasing the content of"))?;
        }
        if deleting && status::deletes_content(&s, c) {
            tolerate_gone(
                apis.contents
                    .delete(&c.name_any(), &DeleteParams::default())
                    .await,
            )
            .map_err(target.err("deleting the content of"))?;
        }
    }

    // A memory state that could not be saved fails the snapshot, saying why.
    let memory_failure = content.as_ref().and_then(memory::failure);
    let failure = failure.or(memory_failure);
    let paused_by_us = content.as_ref().and_then(paused_uid);
    let source = vm.as_ref().map(|v| Source {
        uid: v.metadata.uid.clone().unwrap_or_default(),
        locked,
        blocker: blocker.clone(),
        online: vmi.is_some(),
        paused: vmi
            .as_ref()
            .is_some_and(|i| is_paused(i) && paused_by_us.as_deref() != i.metadata.uid.as_deref()),
    });
    let mut new_status = status::compute(Facts {
        snapshot: &s,
        source: source.as_ref(),
        content: content.as_ref(),
        failure: failure.as_deref(),
        now,
    });
    memory::indicate(&mut new_status, &s, content.as_ref());
    // A snapshot that is done lets its VM go before it says so: whoever waits for it may edit
    // the VM at once (its spec is locked while `snapshotInProgress` names the snapshot).
    if locked
        && !terminating
        && let Some(vm) = &vm
        && matches!(
            new_status.phase.as_deref(),
            Some(status::SUCCEEDED | status::FAILED)
        )
    {
        release_lock(&apis, vm, name)
            .await
            .map_err(target.err("unlocking the source of"))?;
        locked = false;
    }
    if s.status.as_ref() != Some(&new_status) {
        let mut updated = (*s).clone();
        updated.status = Some(new_status.clone());
        write_status(&apis.snapshots, &updated)
            .await
            .map_err(target.err("writing the status of"))?;
    }
    if deleting && !locked && has_finalizer(&s.metadata, SNAPSHOT_FINALIZER) {
        set_finalizer(&apis.snapshots, &s.metadata, SNAPSHOT_FINALIZER, false)
            .await
            .map_err(target.err("removing the finalizer of"))?;
    }
    let finished = matches!(new_status.phase.as_deref(), Some(status::FAILED))
        || (new_status.phase.as_deref() == Some(status::SUCCEEDED)
            && new_status.ready_to_use == Some(true)
            && !locked);
    Ok(if finished && !deleting {
        Action::requeue(RESYNC)
    } else {
        Action::requeue(POLL)
    })
}

/// The claims of the namespace, by name.
async fn claims_in(apis: &Apis) -> Result<BTreeMap<String, PersistentVolumeClaim>, kube::Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(apis.client.clone(), &apis.namespace);
    Ok(by_name(api.list(&ListParams::default()).await?.items))
}

async fn data_volumes_in(apis: &Apis) -> Result<BTreeMap<String, DataVolume>, kube::Error> {
    let api: Api<DataVolume> = Api::namespaced(apis.client.clone(), &apis.namespace);
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(by_name(l.items)),
        // A cluster without CDI has no DataVolumes.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

fn by_name<K: ResourceExt>(items: Vec<K>) -> BTreeMap<String, K> {
    items.into_iter().map(|o| (o.name_any(), o)).collect()
}

/// Which of `vm`'s volumes can be copied, from the claims, StorageClasses and
/// VolumeSnapshotClasses that exist.
async fn inclusion(apis: &Apis, vm: &VirtualMachine) -> Result<volumes::Inclusion, kube::Error> {
    let claims = claims_in(apis).await?;
    let (scs, classes) = classes(&apis.client).await?;
    Ok(volumes::decide(vm, &claims, &scs, &classes))
}

/// The StorageClasses by name and the VolumeSnapshotClasses (none, on a cluster without the
/// snapshot CRDs): what decides which claims can be snapshotted.
pub async fn classes(
    client: &Client,
) -> Result<(BTreeMap<String, StorageClass>, Vec<volumes::SnapshotClass>), kube::Error> {
    let scs: Api<StorageClass> = Api::all(client.clone());
    let scs = by_name(scs.list(&ListParams::default()).await?.items);
    let classes: Api<VolumeSnapshotClass> = Api::all(client.clone());
    let classes = match classes.list(&ListParams::default()).await {
        Ok(l) => l.items.iter().map(vsnap::snapshot_class).collect(),
        Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok((scs, classes))
}

/// Creates `obj`, or reads the one made meanwhile; whether this call made it.
async fn create_or_get<K>(api: &Api<K>, obj: &K) -> Result<(K, bool), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok((api.get(&obj.name_any()).await?, false)),
        r => r.map(|made| (made, true)),
    }
}

/// Adds or removes `finalizer` on the object of `meta`, with its resourceVersion as the
/// precondition.
async fn set_finalizer<K>(
    api: &Api<K>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    finalizer: &str,
    present: bool,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut list: Vec<String> = meta.finalizers.clone().unwrap_or_default();
    list.retain(|f| f != finalizer);
    if present {
        list.push(finalizer.to_string());
    }
    let patch = json!({"metadata": {"finalizers": list, "resourceVersion": meta.resource_version}});
    // A conflict is an error, not "done": the list was computed from a copy that changed
    // meanwhile, and the finalizer is still as it was (a lock released on a conflict cleared
    // `snapshotInProgress` and left the finalizer, holding a deleted VM for ever).
    match api
        .patch(
            meta.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Locks `vm` for snapshot `name`: `status.snapshotInProgress`, then the source finalizer.
async fn take_lock(apis: &Apis, vm: &VirtualMachine, name: &str) -> Result<(), kube::Error> {
    let mut updated = vm.clone();
    let st = updated.status.get_or_insert_with(Default::default);
    if st.snapshot_in_progress.as_deref() != Some(name) {
        st.snapshot_in_progress = Some(name.to_string());
        updated = apis
            .vms
            .replace_status(&vm.name_any(), &PostParams::default(), &updated)
            .await?;
    }
    if !has_finalizer(&updated.metadata, SOURCE_FINALIZER) {
        set_finalizer(&apis.vms, &updated.metadata, SOURCE_FINALIZER, true).await?;
    }
    Ok(())
}

/// Lets `vm` go if snapshot `name` holds it: the finalizer, then `status.snapshotInProgress`.
async fn release_lock(apis: &Apis, vm: &VirtualMachine, name: &str) -> Result<(), kube::Error> {
    if vm
        .status
        .as_ref()
        .and_then(|s| s.snapshot_in_progress.as_deref())
        != Some(name)
    {
        return Ok(());
    }
    if has_finalizer(&vm.metadata, SOURCE_FINALIZER) {
        set_finalizer(&apis.vms, &vm.metadata, SOURCE_FINALIZER, false).await?;
    }
    let Some(mut fresh) = apis.vms.get_opt(&vm.name_any()).await? else {
        return Ok(());
    };
    if let Some(st) = fresh.status.as_mut() {
        st.snapshot_in_progress = None;
    }
    write_status(&apis.vms, &fresh).await
}

fn is_paused(vmi: &VirtualMachineInstance) -> bool {
    vmi.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Paused" && c.status == "True")
}

/// The UID of the VMI this controller paused for `content`.
fn paused_uid(content: &VirtualMachineSnapshotContent) -> Option<String> {
    content.annotations().get(PAUSED_VMI_ANNOTATION).cloned()
}

/// PUT the VMI's `pause` or `unpause` subresource (virt-api's; works on any cluster).
async fn vmi_action(apis: &Apis, vmi: &str, action: &str) -> Result<(), kube::Error> {
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{vmi}/{action}",
        apis.namespace
    );
    let req = http::Request::put(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(b"{}".to_vec())
        .map_err(kube::Error::HttpError)?;
    match apis.client.request_text(req).await {
        // Already in the state asked for (409), or gone (404): nothing to do.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        r => r.map(|_| ()),
    }
}

async fn set_paused_annotation(
    apis: &Apis,
    content: &mut VirtualMachineSnapshotContent,
    uid: Option<&str>,
) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": {PAUSED_VMI_ANNOTATION: uid}}});
    *content = apis
        .contents
        .patch(
            &content.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Unpauses the VMI this controller paused for `content`, if it still runs, and forgets it.
async fn unpause(
    apis: &Apis,
    content: &VirtualMachineSnapshotContent,
    vmi: Option<&VirtualMachineInstance>,
) -> Result<(), kube::Error> {
    let Some(uid) = paused_uid(content) else {
        return Ok(());
    };
    if let Some(vmi) = vmi.filter(|v| v.metadata.uid.as_deref() == Some(uid.as_str())) {
        vmi_action(apis, &vmi.name_any(), "unpause").await?;
    }
    let mut c = content.clone();
    tolerate_gone(set_paused_annotation(apis, &mut c, None).await)
}

/// The content's sync: while `cut_allowed`, the missing VolumeSnapshots are created (a running,
/// unpaused guest is paused first and unpaused once every volume is cut); then the content's
/// status follows its VolumeSnapshots.
async fn sync_content(
    apis: &Apis,
    (snapshot, template): (&VirtualMachineSnapshot, Option<&VirtualMachineInstanceSpec>),
    c: &mut VirtualMachineSnapshotContent,
    vmi: Option<&VirtualMachineInstance>,
    cut_allowed: bool,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let backups = c.spec.volume_backups.clone().unwrap_or_default();
    let mut found: Vec<Option<VolumeSnapshot>> = Vec::new();
    for b in &backups {
        let vs = match b.volume_snapshot_name.as_deref() {
            Some(n) => apis.volume_snapshots.get_opt(n).await?,
            None => None,
        };
        found.push(vs);
    }
    let created = c.status.as_ref().is_some_and(|s| s.creation_time.is_some());
    let missing = found.iter().any(Option::is_none);
    if cut_allowed && missing && !created {
        let inclusion_classes = classes_of(apis, &backups).await?;
        if let Some(vmi) = vmi.filter(|v| !is_paused(v) && paused_uid(c).is_none()) {
            set_paused_annotation(apis, c, vmi.metadata.uid.as_deref()).await?;
            vmi_action(apis, &vmi.name_any(), "pause").await?;
        }
        // The memory state is cut in the same pause as the volumes, before any of them.
        let held = vmi
            .is_some_and(|v| is_paused(v) || paused_uid(c).as_deref() == v.metadata.uid.as_deref());
        let running = vmi.map(|v| &v.spec);
        match memory::step(snapshot, c, template, running, held) {
            memory::MemoryStep::Nothing => {}
            memory::MemoryStep::Fail(why) => {
                set_memory(apis, c, memory::MEMORY_ERROR, &why).await?
            }
            memory::MemoryStep::Save => {
                let Some(vmi) = vmi else { return Ok(()) };
                match save_memory(apis, c, vmi).await {
                    Ok(state) => {
                        let json = serde_json::to_string(&state).unwrap_or_default();
                        set_memory(apis, c, memory::MEMORY_STATE, &json).await?;
                    }
                    Err(e) => {
                        let why = format!("saving the guest's memory state failed: {e}");
                        set_memory(apis, c, memory::MEMORY_ERROR, &why).await?;
                    }
                }
            }
        }
        if memory::failure(c).is_some() {
            // The snapshot fails (the next sync unpauses the guest); no volume is cut.
            return Ok(());
        }
        for (b, slot) in backups.iter().zip(found.iter_mut()) {
            if slot.is_some() || b.volume_snapshot_name.is_none() {
                continue;
            }
            let claim_class = b
                .persistent_volume_claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let Some(class) = inclusion_classes.get(&claim_class) else {
                continue;
            };
            let vs = vsnap::for_backup(c, b, class);
            let (made, new) = create_or_get(&apis.volume_snapshots, &vs).await?;
            if new {
                let note = events::volume_snapshot_created(&made.name_any());
                apis.recorder.record(&*c, &note).await;
            }
            *slot = Some(made);
        }
    }
    let progress: Vec<Option<Progress>> = found
        .iter()
        .map(|v| v.as_ref().map(vsnap::progress))
        .collect();
    let new_status = content::status(c, &progress, now);
    if new_status.creation_time.is_some() {
        unpause(apis, c, vmi).await?;
        if paused_uid(c).is_some() {
            c.metadata
                .annotations
                .as_mut()
                .map(|a| a.remove(PAUSED_VMI_ANNOTATION));
        }
    }
    if c.status.as_ref() != Some(&new_status) {
        let mut updated = apis.contents.get(&c.name_any()).await?;
        updated.status = Some(new_status);
        write_status(&apis.contents, &updated).await?;
        *c = updated;
    }
    Ok(())
}

/// Asks the VMI's node agent (through the `memorysnapshot` subresource, ours) to save its
/// memory state under the content's name; what the content records of it.
async fn save_memory(
    apis: &Apis,
    c: &VirtualMachineSnapshotContent,
    vmi: &VirtualMachineInstance,
) -> Result<memory::MemoryState, kube::Error> {
    let uid = vmi.metadata.uid.clone().unwrap_or_default();
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{}/{}",
        apis.namespace,
        vmi.name_any(),
        crate::api::instance::MEMORY_SNAPSHOT
    );
    let body = serde_json::to_vec(&crate::api::instance::MemorySnapshotRequest {
        name: memory::state_name(c),
        uid: uid.clone(),
    })
    .map_err(kube::Error::SerdeError)?;
    let req = http::Request::put(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    apis.client.request_text(req).await?;
    Ok(memory::MemoryState {
        node: vmi
            .status
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        vmi_uid: uid,
        shape: memory::shape_of(&vmi.spec),
    })
}

/// Sets the content's memory annotation `key` to `value`.
async fn set_memory(
    apis: &Apis,
    content: &mut VirtualMachineSnapshotContent,
    key: &str,
    value: &str,
) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    *content = apis
        .contents
        .patch(
            &content.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// The VolumeSnapshotClass for each StorageClass the backups' claims use.
async fn classes_of(
    apis: &Apis,
    backups: &[kubevirt_api::snapshot::v1beta1::VolumeBackup],
) -> Result<BTreeMap<String, String>, kube::Error> {
    let scs: Api<StorageClass> = Api::all(apis.client.clone());
    let classes: Api<VolumeSnapshotClass> = Api::all(apis.client.clone());
    let classes: Vec<volumes::SnapshotClass> = classes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(vsnap::snapshot_class)
        .collect();
    let mut out = BTreeMap::new();
    for b in backups {
        let Some(name) = b
            .persistent_volume_claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
        else {
            continue;
        };
        if out.contains_key(&name) {
            continue;
        }
        if let Some(sc) = scs.get_opt(&name).await?
            && let Ok(class) = volumes::class_for(&sc, &classes)
        {
            out.insert(name, class);
        }
    }
    Ok(out)
}
