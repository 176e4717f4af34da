//! Runs [`super::plan`] for every VM against an API server with kube-rs: a VM is synced when it
//! changes, when an instance or DataVolume it owns changes, when a start backoff ends, while its
//! storage is awaited, and every few minutes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Client, ResourceExt};
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_api::core::v1::{
    VirtualMachine, VirtualMachineCondition, VirtualMachineInstance, VolumeSnapshotStatus,
};

use super::events as note;
use super::storage::{self, Storage};
use super::sync::{Action, Observed, plan};
use super::{instance, instancetype};
use crate::events::Recorder;
use crate::runtime::{SyncError, Target, delete_vmi, run_owning_vmis_and, write_status};

/// A VM with nothing pending is synced again after this long anyway.
const RESYNC: Duration = Duration::from_secs(300);

/// Runs the VM controller until `shutdown` resolves. `on_sync` sees each sync's outcome (for
/// logging).
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    // The DataVolume kind is CDI's: installed with ours everywhere (`kubevirt-local up`, the
    // `crds` the operator applies).
    let recorder = Recorder::new(client.clone(), note::COMPONENT);
    run_owning_vmis_and::<VirtualMachine, _, _>(
        client,
        shutdown,
        on_sync,
        move |vm, client| reconcile(vm, client, recorder.clone()),
        |c, client| {
            c.owns(
                Api::<DataVolume>::all(client.clone()),
                kube::runtime::watcher::Config::default(),
            )
        },
    )
    .await;
}

/// The DataVolumes and claims `vm` names that exist.
async fn storage_of(
    client: &Client,
    namespace: &str,
    vm: &VirtualMachine,
) -> Result<(Vec<DataVolume>, Vec<PersistentVolumeClaim>), kube::Error> {
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let mut found_dvs = Vec::new();
    for name in storage::data_volume_names(vm) {
        found_dvs.extend(dvs.get_opt(&name).await?);
    }
    let mut found_claims = Vec::new();
    for name in storage::claim_names(vm) {
        found_claims.extend(claims.get_opt(&name).await?);
    }
    Ok((found_dvs, found_claims))
}

/// `status.volumeSnapshotStatuses`: whether a VirtualMachineSnapshot could copy each volume.
/// The classes are read only for a VM with claims.
async fn snapshot_statuses(
    client: &Client,
    vm: &VirtualMachine,
    claims: &[PersistentVolumeClaim],
) -> Result<Vec<VolumeSnapshotStatus>, kube::Error> {
    let (scs, classes) = if claims.is_empty() {
        Default::default()
    } else {
        crate::snapshot::controller::classes(client).await?
    };
    let claims = claims.iter().map(|c| (c.name_any(), c.clone())).collect();
    Ok(crate::snapshot::volumes::decide(vm, &claims, &scs, &classes).statuses(vm))
}

/// Creates the DataVolumes of `vm`'s templates that are missing; a refusal is returned as the
/// VM's Failure message (upstream's wording).
async fn create_data_volumes(
    client: &Client,
    recorder: &Recorder,
    vm: &VirtualMachine,
    missing: &[DataVolume],
) -> Result<Option<String>, kube::Error> {
    let namespace = vm.namespace().unwrap_or_default();
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), &namespace);
    for dv in missing {
        let name = dv.name_any();
        match dvs.create(&PostParams::default(), dv).await {
            Ok(_) => recorder.record(vm, &note::data_volume_created(&name)).await,
            // Made meanwhile: the watch brings it.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                recorder
                    .record(vm, &note::data_volume_failed(&name, &e.message))
                    .await;
                return Ok(Some(format!(
                    "Error encountered while creating DataVolumes: failed to create DataVolume: {}",
                    e.message
                )));
            }
            Err(e) => {
                let failed = note::data_volume_failed(&name, &e.to_string());
                recorder.record(vm, &failed).await;
                return Err(e);
            }
        }
    }
    Ok(None)
}

async fn reconcile(
    vm: Arc<VirtualMachine>,
    client: Arc<Client>,
    recorder: Recorder,
) -> Result<Requeue, SyncError> {
    let target = Target::of(&*vm)?;
    let (namespace, name) = (&target.namespace, &target.name);
    let vms: Api<VirtualMachine> = Api::namespaced((*client).clone(), namespace);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced((*client).clone(), namespace);
    let vmi = vmis
        .get_opt(name)
        .await
        .map_err(target.err("reading the instance of"))?;
    let (dvs, claims) = storage_of(&client, namespace, &vm)
        .await
        .map_err(target.err("reading the storage of"))?;
    let found = Storage::of(&dvs, &claims);
    let snapshot_statuses = snapshot_statuses(&client, &vm, &claims)
        .await
        .map_err(target.err("reading the storage classes of"))?;
    let now = Timestamp::now();
    let mut p = plan(Observed {
        vm: &vm,
        vmi: vmi.as_ref(),
        now,
        jitter: f64::from(now.subsec_nanosecond()) / 1e9,
        storage: &found,
    });
    let mut failed_create = create_data_volumes(&client, &recorder, &vm, &p.create_data_volumes)
        .await
        .map_err(target.err("creating the DataVolumes of"))?;
    // The marker is one-shot: once an instance carries it, the VM's goes (a later start boots).
    consume_resume_marker(&vms, &vm, vmi.as_ref())
        .await
        .map_err(target.err("clearing the memory-state marker of"))?;
    match &p.action {
        Action::None => {}
        // The cache may not show yet that the VM is being deleted: ask the server before
        // making it a new VMI (which would hold up a foreground delete).
        Action::Create { .. }
            if !still_wanted(&vms, &vm)
                .await
                .map_err(target.err("reading"))? => {}
        Action::Create { paused } => {
            let mut manifest = instance::for_vm(&vm, *paused);
            let expanded = instancetype::expand(&client, &vm, &mut manifest).await;
            let created = match expanded {
                Ok(pinned) => {
                    if pinned.instancetype.is_some() {
                        p.status.instancetype_ref = pinned.instancetype;
                    }
                    if pinned.preference.is_some() {
                        p.status.preference_ref = pinned.preference;
                    }
                    vmis.create(&PostParams::default(), &manifest).await
                }
                // The instancetype or preference cannot be applied: said on the VM.
                Err(e) => Err(kube::Error::Api(
                    kube::core::Status::failure(&e.to_string(), "Invalid")
                        .with_code(422)
                        .boxed(),
                )),
            };
            match created {
                Ok(made) => {
                    recorder
                        .record(&*vm, &note::created(&made.name_any()))
                        .await;
                    consume_resume_marker(&vms, &vm, Some(&made))
                        .await
                        .map_err(target.err("clearing the memory-state marker of"))?;
                }
                // Made meanwhile: the watch brings it.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                // The template itself is refused (admission): say so on the VM.
                Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                    recorder
                        .record(&*vm, &note::failed_create(&e.message))
                        .await;
                    failed_create = Some(e.message);
                }
                Err(e) => {
                    recorder
                        .record(&*vm, &note::failed_create(&e.to_string()))
                        .await;
                    return Err(target.err("creating the instance of")(e));
                }
            }
        }
        Action::Delete { uid } => match delete_vmi(&vmis, name, uid).await {
            Ok(()) => recorder.record(&*vm, &note::deleted(uid)).await,
            Err(e) => {
                let failed = note::failed_delete(name, &e.to_string());
                recorder.record(&*vm, &failed).await;
                return Err(target.err("deleting the instance of")(e));
            }
        },
        Action::SetStrategy(s) => {
            let patch = serde_json::json!({"spec": {"runStrategy": s.as_str(), "running": null}});
            vms.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(target.err("setting the run strategy of"))?;
        }
    }
    p.status.volume_snapshot_statuses = Some(snapshot_statuses).filter(|s| !s.is_empty());
    if let Some(message) = failed_create {
        let conditions = p.status.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != "Failure");
        conditions.push(VirtualMachineCondition {
            type_: "Failure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(message),
            last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            last_probe_time: None,
        });
    }
    if vm.status.as_ref() != Some(&p.status) {
        let mut updated = (*vm).clone();
        updated.status = Some(p.status.clone());
        write_status(&vms, &updated)
            .await
            .map_err(target.err("writing the status of"))?;
    }
    Ok(match p.requeue_at.take() {
        Some(at) => Requeue::requeue(
            at.duration_since(now)
                .try_into()
                .unwrap_or(RESYNC)
                .max(Duration::from_millis(100)),
        ),
        None => Requeue::requeue(RESYNC),
    })
}

/// Whether the VM still exists as the same object and is not being deleted.
async fn still_wanted(vms: &Api<VirtualMachine>, vm: &VirtualMachine) -> Result<bool, kube::Error> {
    Ok(vms.get_opt(&vm.name_any()).await?.is_some_and(|now| {
        now.metadata.deletion_timestamp.is_none() && now.metadata.uid == vm.metadata.uid
    }))
}

/// Removes the VM's memory-state marker once `vmi`, its instance, carries the same one.
async fn consume_resume_marker(
    vms: &Api<VirtualMachine>,
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
) -> Result<(), kube::Error> {
    use crate::snapshot::memory::RESUME_ANNOTATION;
    let marker = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(RESUME_ANNOTATION))
            .cloned()
    };
    let Some(on_vm) = marker(&vm.metadata) else {
        return Ok(());
    };
    if vmi.and_then(|v| marker(&v.metadata)) != Some(on_vm) {
        return Ok(());
    }
    let patch = serde_json::json!({"metadata": {"annotations": {RESUME_ANNOTATION: null}}});
    vms.patch(
        &vm.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}
