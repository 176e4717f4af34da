//! The KubeVirt operator (`kubevirt-controller operator`, upstream's virt-operator): the
//! replica holding the `virt-operator` Lease ([`lease`]) reconciles the `KubeVirt` CR of its
//! namespace: it checks the spec ([`config`]), installs and keeps every component
//! ([`components`], [`apply`], the certificates in [`certs`] and [`secrets`]), reports
//! upstream's status ([`status`], from each component's [`workload`]) and removes everything
//! when the CR is deleted ([`uninstall`]). A second CR in the namespace is left alone with
//! upstream's condition.

pub mod apply;
pub mod certs;
pub mod components;
pub mod config;
pub mod lease;
pub mod secrets;
pub mod status;
pub mod target;
pub mod uninstall;
pub mod workload;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use kubevirt_api::core::v1::{KubeVirt, KubeVirtStatus};
use serde_json::json;

use crate::runtime::{SyncError, Target};
use status::{FINALIZER, Outcome};

/// How long a leader's lease lasts without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews (and a candidate retries).
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// While something is changing, the CR is synced again this soon.
const PROGRESS_REQUEUE: Duration = Duration::from_secs(1);
/// Once deployed, it is checked this often (a component edited or removed by hand is put back).
const STEADY_REQUEUE: Duration = Duration::from_secs(30);

/// What the operator is started with.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Its namespace (`WATCH_NAMESPACE`): the CR's, the components' and the Lease's.
    pub namespace: String,
    /// The registry of its own image, the components' default.
    pub registry: String,
    /// The tag of its own image, the components' default.
    pub tag: String,
    /// Its version (`KUBEVIRT_VERSION`), reported as `operatorVersion`.
    pub version: String,
    /// Its identity in the Lease (the pod's name).
    pub identity: String,
}

/// Leads or waits to lead until `shutdown` resolves; while leading, reconciles.
pub async fn run(client: Client, config: OperatorConfig, shutdown: impl Future<Output = ()>) {
    let elector = lease::Elector::new(
        client.clone(),
        &config.namespace,
        "virt-operator",
        &config.identity,
        LEASE_DURATION,
    );
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        // A candidate until the lease is ours.
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!("acquiring lease virt-operator: {e}"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
        }
        tracing::info!(
            identity = elector.identity(),
            "leading: reconciling KubeVirt CRs"
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let leader = tokio::spawn(reconcile_until(
            client.clone(),
            config.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut renewed = tokio::time::Instant::now();
        let lost = loop {
            tokio::select! {
                _ = &mut shutdown => break false,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
            match elector.try_acquire_or_renew().await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => break true,
                // A passing failure: the lease still holds until its duration is over.
                Err(e) if renewed.elapsed() < LEASE_DURATION * 2 / 3 => {
                    tracing::warn!("renewing lease virt-operator: {e}")
                }
                Err(_) => break true,
            }
        };
        let _ = stop.send(());
        let _ = leader.await;
        if !lost {
            if let Err(e) = elector.release().await {
                tracing::warn!("releasing lease virt-operator: {e}");
            }
            return;
        }
        tracing::warn!("lost lease virt-operator: no longer reconciling");
    }
}

/// The reconcile loop over the KubeVirt CRs, until `stop` resolves.
async fn reconcile_until(
    client: Client,
    config: Arc<OperatorConfig>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let context = (client.clone(), config);
    crate::runtime::run_with(
        client,
        context,
        stop,
        |outcome| crate::logging::sync_outcome("kubevirt", outcome),
        |kv: Arc<KubeVirt>, ctx: Arc<(Client, Arc<OperatorConfig>)>| async move {
            reconcile(&kv, &ctx.0, &ctx.1).await
        },
        |c, _| c,
    )
    .await;
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The CR of the namespace that is installed from: one already deploying or deployed (the
/// oldest if there were ever two), else the oldest. Deleted ones are out.
pub fn active(crs: &[KubeVirt]) -> Option<String> {
    let phase = |k: &KubeVirt| k.status.as_ref().and_then(|s| s.phase.clone());
    let mut live: Vec<&KubeVirt> = crs
        .iter()
        .filter(|k| phase(k).as_deref() != Some(status::phase::DELETED))
        .collect();
    live.sort_by_key(|k| {
        (
            phase(k).is_none(),
            k.metadata.creation_timestamp.as_ref().map(|t| t.0),
            k.name_any(),
        )
    });
    live.first().map(|k| k.name_any())
}

async fn write_status(
    api: &Api<KubeVirt>,
    kv: &KubeVirt,
    status: KubeVirtStatus,
    t: &Target,
) -> Result<(), SyncError> {
    if kv.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut updated = kv.clone();
    updated.status = Some(status);
    crate::runtime::write_status(api, &updated)
        .await
        .map_err(t.err("writing the status of"))
}

async fn set_finalizers(
    api: &Api<KubeVirt>,
    kv: &KubeVirt,
    finalizers: Vec<String>,
    t: &Target,
) -> Result<(), SyncError> {
    let patch = json!({"metadata": {"finalizers": finalizers,
        "resourceVersion": kv.resource_version()}});
    crate::runtime::tolerate_gone(
        api.patch(&t.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    )
    .map_err(t.err("updating the finalizers of"))
}

/// One sync of a `KubeVirt` CR.
async fn reconcile(
    kv: &KubeVirt,
    client: &Client,
    config: &OperatorConfig,
) -> Result<Action, SyncError> {
    let t = Target::of(kv)?;
    if t.namespace != config.namespace {
        return Ok(Action::await_change());
    }
    let api: Api<KubeVirt> = Api::namespaced(client.clone(), &t.namespace);
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(t.err("listing the KubeVirt CRs beside"))?;
    let has_finalizer = kv.finalizers().iter().any(|f| f == FINALIZER);
    if active(&all.items).as_deref() != Some(t.name.as_str()) && !has_finalizer {
        let s = status::existing_deployment(kv.status.as_ref(), &now());
        write_status(&api, kv, s, &t).await?;
        return Ok(Action::requeue(STEADY_REQUEUE));
    }
    let install = target::install_for(kv, &config.namespace, &config.registry, &config.tag);
    if kv.metadata.deletion_timestamp.is_some() {
        return delete(kv, client, &api, &install, &t).await;
    }
    if !has_finalizer {
        let mut finalizers = kv.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        set_finalizers(&api, kv, finalizers, &t).await?;
        // The watch brings the CR back with its finalizer.
        return Ok(Action::requeue(PROGRESS_REQUEUE));
    }
    let spec = serde_json::to_value(&kv.spec).unwrap_or_default();
    let problems = config::validate(&spec);
    let outcome = if problems.is_empty() {
        match apply::install(client, &install).await {
            Ok(workloads) => Outcome::Applied(workloads),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    } else {
        Outcome::Invalid(config::describe(&problems))
    };
    let s = status::installing(
        kv.status.as_ref(),
        kv.metadata.generation,
        &install,
        &config.version,
        &outcome,
        &now(),
    );
    let deployed = s.phase.as_deref() == Some(status::phase::DEPLOYED);
    write_status(&api, kv, s, &t).await?;
    Ok(match outcome {
        Outcome::Applied(_) if deployed => Action::requeue(STEADY_REQUEUE),
        Outcome::Invalid(_) => Action::requeue(STEADY_REQUEUE),
        _ => Action::requeue(PROGRESS_REQUEUE),
    })
}

async fn delete(
    kv: &KubeVirt,
    client: &Client,
    api: &Api<KubeVirt>,
    install: &components::Install,
    t: &Target,
) -> Result<Action, SyncError> {
    if !kv.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if uninstall::blocks(kv.spec.uninstall_strategy.as_deref()) {
        let present = uninstall::workloads_present(client)
            .await
            .map_err(t.err("looking for workloads before removing"))?;
        if let Some(why) = present {
            let s = status::deleting(kv.status.as_ref(), Some(why), false, &now());
            write_status(api, kv, s, t).await?;
            return Ok(Action::requeue(PROGRESS_REQUEUE));
        }
    }
    let done = match uninstall::remove(client, install).await {
        Ok(done) => done,
        Err(e) => {
            let s = status::deleting(kv.status.as_ref(), Some(&e.to_string()), false, &now());
            write_status(api, kv, s, t).await?;
            return Ok(Action::requeue(PROGRESS_REQUEUE));
        }
    };
    let s = status::deleting(kv.status.as_ref(), None, done, &now());
    write_status(api, kv, s, t).await?;
    if !done {
        return Ok(Action::requeue(PROGRESS_REQUEUE));
    }
    let rest: Vec<String> = kv
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    // The status write moved the resourceVersion: the finalizers go on the latest.
    let latest = api.get_opt(&t.name).await.map_err(t.err("reading"))?;
    if let Some(latest) = latest {
        set_finalizers(api, &latest, rest, t).await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(name: &str, created: i64, phase: Option<&str>) -> KubeVirt {
        let mut k = KubeVirt::new(name, Default::default());
        k.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        k.status = phase.map(|p| KubeVirtStatus {
            phase: Some(p.into()),
            ..Default::default()
        });
        k
    }

    #[test]
    fn the_deploying_cr_stays_active_and_a_newer_one_waits() {
        assert_eq!(
            active(&[kv("a", 2, None), kv("b", 1, None)]).as_deref(),
            Some("b")
        );
        assert_eq!(
            active(&[kv("a", 2, Some("Deployed")), kv("b", 1, None)]).as_deref(),
            Some("a")
        );
        assert_eq!(
            active(&[kv("a", 2, Some("Deleted")), kv("b", 3, None)]).as_deref(),
            Some("b")
        );
        assert_eq!(active(&[]), None);
    }
}
