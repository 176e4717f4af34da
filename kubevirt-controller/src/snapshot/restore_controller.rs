//! Runs the VirtualMachineRestore decisions against an API server with kube-rs, in upstream's
//! order: wait for the target to have no instance (its `targetReadinessPolicy` decides how,
//! [`readiness`](super::readiness)), lock the target (`status.restoreInProgress`), list the
//! volume restores, create their claims from the VolumeSnapshots, rewrite (or create) the VM,
//! delete the DataVolumes it no longer names, unlock, `complete: true`. Each step is written
//! before the next is taken, so a sync that fails half-way resumes where it stopped. A restore
//! that failed (a Failure condition) is not touched again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};
use kubevirt_api::snapshot::v1beta1::{
    VirtualMachineRestore, VirtualMachineRestoreStatus, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent,
};

use super::conditions::{self, FAILURE, PROGRESSING, READY};
use super::events;
use super::readiness::{self, NotReady};
use super::restore::{self, applied};
use super::{lock, status as snapshot_status};
use crate::api::lifecycle;
use crate::api::options::StopOptions;
use crate::events::Recorder;
use crate::runtime::{SyncError, Target, tolerate_gone, write_status};
use crate::vm::RunStrategy;

/// While a restore waits (claims binding, the target stopping) it is synced this often.
const POLL: Duration = Duration::from_secs(2);

/// Runs the restore controller until `shutdown` resolves; `on_sync` hears each outcome.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let recorder = Recorder::new(client.clone(), events::RESTORE_COMPONENT);
    crate::runtime::run_with(
        client.clone(),
        client,
        shutdown,
        on_sync,
        move |r, client| reconcile(r, client, recorder.clone()),
        |c, _| c,
    )
    .await;
}

/// Where a sync stopped: the conditions to show (Progressing, Ready) and whether to look again.
enum Step {
    /// Waiting or working: Progressing (status, reason), Ready reason.
    Wait(bool, String),
    /// The target still runs: the reason, and the message of the `RestoreTargetNotReady` event.
    NotReady(String, &'static str),
    /// Done.
    Complete,
}

async fn reconcile(
    r: Arc<VirtualMachineRestore>,
    client: Arc<Client>,
    recorder: Recorder,
) -> Result<Action, SyncError> {
    let target = Target::of(&*r)?;
    if r.status.as_ref().and_then(|s| s.complete) == Some(true)
        || r.metadata.deletion_timestamp.is_some()
        || failed(&r)
    {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let restores: Api<VirtualMachineRestore> =
        Api::namespaced((*client).clone(), &target.namespace);
    let mut st = r
        .status
        .clone()
        .unwrap_or_else(|| VirtualMachineRestoreStatus {
            complete: Some(false),
            ..Default::default()
        });
    let mut note = None;
    let step = match steps(&r, &mut st, &client, &target).await {
        Ok(s) => s,
        Err(Failed::Api(e)) => return Err(e),
        Err(Failed::Invalid(m)) => {
            note = Some(events::restore_error(&m));
            Step::Wait(false, m)
        }
        Err(Failed::Fatal(m)) => {
            conditions::set(&mut st.conditions, FAILURE, true, &m, now);
            note = Some(events::restore_failed(&m));
            Step::Wait(false, m)
        }
    };
    let completes = matches!(step, Step::Complete);
    match step {
        Step::Wait(progressing, reason) => {
            conditions::set(&mut st.conditions, PROGRESSING, progressing, &reason, now);
            conditions::set(&mut st.conditions, READY, false, &reason, now);
        }
        Step::NotReady(reason, message) => {
            conditions::set(&mut st.conditions, PROGRESSING, false, &reason, now);
            conditions::set(&mut st.conditions, READY, false, &reason, now);
            note = Some(events::restore_target_not_ready(message));
        }
        Step::Complete => {
            st.complete = Some(true);
            st.restore_time = Some(Time(now));
            conditions::set(
                &mut st.conditions,
                PROGRESSING,
                false,
                "Operation complete",
                now,
            );
            conditions::set(&mut st.conditions, READY, true, "Operation complete", now);
        }
    }
    if r.status.as_ref() != Some(&st) {
        let mut updated = (*r).clone();
        updated.status = Some(st.clone());
        write_status(&restores, &updated)
            .await
            .map_err(target.err("writing the status of"))?;
        // Told when the status moves on only: a restore that stays stuck is not retold.
        if completes {
            recorder
                .record(&*r, &events::restore_complete(&target.name))
                .await;
        } else if let Some(n) = &note {
            recorder.record(&*r, n).await;
        }
    }
    Ok(if st.complete == Some(true) || failed_status(&st) {
        Action::await_change()
    } else {
        Action::requeue(POLL)
    })
}

/// Whether `claim`'s StorageClass binds on first use (`WaitForFirstConsumer`).
async fn binds_on_first_use(
    client: &Client,
    claim: &PersistentVolumeClaim,
) -> Result<bool, kube::Error> {
    let Some(name) = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
    else {
        return Ok(false);
    };
    let classes: Api<StorageClass> = Api::all(client.clone());
    Ok(classes
        .get_opt(name)
        .await?
        .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")))
}

/// Whether `r` failed for good (upstream stops processing a restore with a Failure condition).
fn failed(r: &VirtualMachineRestore) -> bool {
    r.status.as_ref().is_some_and(failed_status)
}

fn failed_status(st: &VirtualMachineRestoreStatus) -> bool {
    st.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == FAILURE && c.status == "True")
}

/// A step that failed: an API error (retried), a state only a change fixes (shown), or a
/// failure of the restore itself (a Failure condition; nothing more is done).
enum Failed {
    Api(SyncError),
    Invalid(String),
    Fatal(String),
}

impl From<SyncError> for Failed {
    fn from(e: SyncError) -> Self {
        Failed::Api(e)
    }
}

async fn steps(
    r: &VirtualMachineRestore,
    st: &mut VirtualMachineRestoreStatus,
    client: &Client,
    target: &Target,
) -> Result<Step, Failed> {
    let ns = &target.namespace;
    let name = target.name.as_str();
    let snapshots: Api<VirtualMachineSnapshot> = Api::namespaced(client.clone(), ns);
    let contents: Api<VirtualMachineSnapshotContent> = Api::namespaced(client.clone(), ns);
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);

    let snap_name = &r.spec.virtual_machine_snapshot_name;
    let snapshot = snapshots
        .get_opt(snap_name)
        .await
        .map_err(target.err("reading the snapshot of"))?
        .ok_or_else(|| {
            Failed::Invalid(format!(
                "VirtualMachineSnapshot {snap_name:?} does not exist"
            ))
        })?;
    let ready = snapshot.status.as_ref().and_then(|s| s.ready_to_use) == Some(true);
    if snapshot.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(snapshot_status::FAILED) {
        return Err(Failed::Invalid(format!(
            "VirtualMachineSnapshot {snap_name:?} has failed and is invalid to use"
        )));
    }
    if !ready {
        return Err(Failed::Invalid(format!(
            "VirtualMachineSnapshot {snap_name:?} is not ready to use"
        )));
    }
    let content_name = snapshot
        .status
        .as_ref()
        .and_then(|s| s.virtual_machine_snapshot_content_name.clone())
        .unwrap_or_default();
    let content = contents
        .get_opt(&content_name)
        .await
        .map_err(target.err("reading the snapshot content of"))?
        .ok_or_else(|| {
            Failed::Invalid(format!(
                "VirtualMachineSnapshotContent {content_name:?} does not exist"
            ))
        })?;

    // The target's instance must be gone before anything is locked or written.
    let vm_name = &r.spec.target.name;
    let vm = vms
        .get_opt(vm_name)
        .await
        .map_err(target.err("reading the target of"))?;
    if vm.as_ref().is_some_and(|v| !applied(r, v))
        && vmis
            .get_opt(vm_name)
            .await
            .map_err(target.err("reading the target instance of"))?
            .is_some()
    {
        let created = r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let policy = r.spec.target_readiness_policy.as_deref();
        return match readiness::decide(policy, created, Timestamp::now()) {
            NotReady::Wait(reason) => Ok(Step::NotReady(reason, readiness::VMI_EXISTS)),
            NotReady::Fail(m) => Err(Failed::Fatal(m)),
            NotReady::Stop => {
                // A halted VM is already on its way down (`stop` would only answer that it
                // is not running): each poll asks only while it is not.
                let halted = vm.as_ref().is_some_and(|v| {
                    RunStrategy::of(&v.spec).is_ok_and(|s| s == RunStrategy::Halted)
                });
                if !halted
                    && let Err(e) =
                        lifecycle::stop(client, ns, vm_name, StopOptions::default()).await
                {
                    tracing::debug!(restore = name, error = %e, "stopping the restore target");
                }
                Ok(Step::NotReady(
                    readiness::STOPPING.into(),
                    readiness::STOPPING,
                ))
            }
        };
    }

    // The target's lock (an existing VM not yet carrying this restore).
    if let Some(vm) = vm.as_ref().filter(|v| !applied(r, v)) {
        lock::restore_may_lock(vm, name).map_err(Failed::Invalid)?;
        if vm
            .status
            .as_ref()
            .and_then(|s| s.restore_in_progress.as_deref())
            != Some(name)
        {
            let mut locked = vm.clone();
            locked
                .status
                .get_or_insert_with(Default::default)
                .restore_in_progress = Some(name.to_string());
            vms.replace_status(vm_name, &PostParams::default(), &locked)
                .await
                .map_err(target.err("locking the target of"))?;
            return Ok(Step::Wait(
                true,
                "Initializing VirtualMachineRestore".into(),
            ));
        }
    }

    // The volume restores, then their claims.
    let wanted =
        restore::volume_restores(r, &content).map_err(|e| Failed::Invalid(e.to_string()))?;
    if st.restores.as_ref() != Some(&wanted) {
        st.restores = Some(wanted);
        return Ok(Step::Wait(true, "Creating new PVCs".into()));
    }
    let source_meta = content
        .spec
        .source
        .virtual_machine
        .as_ref()
        .and_then(|v| v.metadata.clone())
        .unwrap_or_default();
    let source = (
        source_meta.name.as_deref().unwrap_or_default(),
        source_meta.namespace.as_deref().unwrap_or_default(),
    );
    let mut waiting = false;
    for vr in &wanted {
        match claims
            .get_opt(&vr.persistent_volume_claim)
            .await
            .map_err(target.err("reading the restored claims of"))?
        {
            None => {
                let backup = content
                    .spec
                    .volume_backups
                    .iter()
                    .flatten()
                    .find(|b| b.volume_name == vr.volume_name)
                    .ok_or_else(|| {
                        Failed::Invalid(format!("no backup of volume {}", vr.volume_name))
                    })?;
                let claim = restore::restore_claim(r, backup, vr, source);
                tolerate_gone(claims.create(&PostParams::default(), &claim).await)
                    .map_err(target.err("creating the restored claims of"))?;
                waiting = true;
            }
            Some(c) => match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Bound") => {}
                Some("Lost") => {
                    return Err(Failed::Invalid(format!(
                        "PVC {ns}/{} in status \"Lost\"",
                        c.name_any()
                    )));
                }
                // A claim of a WaitForFirstConsumer class binds when the VM first runs
                // (upstream waits only for Immediate classes).
                _ => {
                    waiting |= !binds_on_first_use(client, &c).await.map_err(
                        target.err("reading the storage class of the restored claims of"),
                    )?
                }
            },
        }
    }
    if waiting {
        return Ok(Step::Wait(true, "Waiting for new PVCs".into()));
    }

    // The target must be stopped.
    if let Some(vm) = vm.as_ref().filter(|v| !applied(r, v)) {
        let halted = RunStrategy::of(&vm.spec).is_ok_and(|s| s == RunStrategy::Halted);
        if !halted {
            return Err(Failed::Invalid(format!(
                "invalid RunStrategy {:?}",
                RunStrategy::of(&vm.spec)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown")
            )));
        }
    }

    // The VM itself.
    match &vm {
        Some(v) if applied(r, v) => {}
        Some(v) => {
            let new = restore::restored_vm(r, &content, &wanted, Some(v))
                .map_err(|e| Failed::Invalid(e.to_string()))?;
            st.deleted_data_volumes =
                Some(restore::deleted_data_volumes(v, &new)).filter(|d| !d.is_empty());
            vms.replace(vm_name, &PostParams::default(), &new)
                .await
                .map_err(target.err("updating the target of"))?;
            return Ok(Step::Wait(true, "Updating target spec".into()));
        }
        None => {
            let new = restore::restored_vm(r, &content, &wanted, None)
                .map_err(|e| Failed::Invalid(e.to_string()))?;
            vms.create(&PostParams::default(), &new)
                .await
                .map_err(target.err("creating the target of"))?;
            return Ok(Step::Wait(true, "Creating target VM".into()));
        }
    }

    // The DataVolumes the restored VM no longer names.
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), ns);
    for dv in st.deleted_data_volumes.iter().flatten() {
        tolerate_gone(dvs.delete(dv, &DeleteParams::default()).await)
            .map_err(target.err("deleting the old DataVolumes of"))?;
    }

    // Unlock.
    if let Some(v) = &vm
        && v.status
            .as_ref()
            .and_then(|s| s.restore_in_progress.as_deref())
            == Some(name)
    {
        let mut unlocked = v.clone();
        if let Some(s) = unlocked.status.as_mut() {
            s.restore_in_progress = None;
        }
        write_status(&vms, &unlocked)
            .await
            .map_err(target.err("unlocking the target of"))?;
        return Ok(Step::Wait(true, "Updating target status".into()));
    }
    Ok(Step::Complete)
}
