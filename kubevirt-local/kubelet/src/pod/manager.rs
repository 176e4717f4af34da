//! Watches the pods bound to this node (`spec.nodeName=<node>`), runs a worker per pod, and
//! removes sandboxes (and host state) whose pod the API no longer has — also those left from
//! before a restart. Pods the API still has are adopted as they are: their workers find the
//! running sandbox and containers by their CRI labels.
//!
//! Like upstream's PLEG, one relist a second ([`RELIST_EVERY`]: two CRI calls for the whole
//! node) notices a sandbox or container of a pod that appeared, went or changed state, and
//! wakes that pod's worker; steady pods' workers otherwise sleep.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::cleanup::{remove_host_state, remove_orphaned_pod_cgroups};
use super::runtime;
use super::worker::{Context, Worker};

/// How often sandboxes without a pod are looked for.
const ORPHANS_EVERY: Duration = Duration::from_secs(10);

/// How often the runtime's sandboxes and containers are listed for changes.
pub const RELIST_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
    wake: Arc<Notify>,
    seen: Seen,
}

/// What the runtime shows of one pod: its sandboxes' and containers' ids, states and attempts,
/// sorted.
pub(super) type Fingerprint = Vec<(String, i32, u32)>;

/// What a pod's worker saw of the pod in the runtime at the end of its last pass: a relist that
/// shows the same does not wake it (its own sandbox and containers appearing, mostly).
pub(super) type Seen = Arc<std::sync::Mutex<Option<Fingerprint>>>;

/// The [`Fingerprint`] of a pod whose only sandbox is `sandbox` (ready, attempt `attempt`) with
/// `containers`.
pub(super) fn fingerprint<'a>(
    sandbox: &str,
    attempt: u32,
    containers: impl Iterator<Item = &'a k8s_cri::v1::ContainerStatus>,
) -> Fingerprint {
    let ready = k8s_cri::v1::PodSandboxState::SandboxReady as i32;
    let mut f: Fingerprint = std::iter::once((sandbox.to_string(), ready, attempt))
        .chain(containers.map(|c| {
            let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
            (c.id.clone(), c.state, attempt)
        }))
        .collect();
    f.sort();
    f
}

/// Every pod's [`Fingerprint`] by uid, from one `ListPodSandbox` and one `ListContainers`.
async fn relist(ctx: &Context) -> Result<HashMap<String, Fingerprint>, crate::cri::CriError> {
    let mut out: HashMap<String, Fingerprint> = HashMap::new();
    let uid_of = |labels: &HashMap<String, String>| {
        labels
            .get(crate::cri::labels::POD_UID)
            .cloned()
            .unwrap_or_default()
    };
    for s in runtime::sandboxes(&ctx.cri, None).await? {
        let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt);
        out.entry(uid_of(&s.labels))
            .or_default()
            .push((s.id, s.state, attempt));
    }
    for c in runtime::all_containers(&ctx.cri).await? {
        let attempt = c.metadata.as_ref().map_or(0, |m| m.attempt);
        out.entry(uid_of(&c.labels))
            .or_default()
            .push((c.id, c.state, attempt));
    }
    for f in out.values_mut() {
        f.sort();
    }
    Ok(out)
}

/// Removes sandboxes of pods not in `known`, and pod directories of unknown uids.
async fn remove_orphans(ctx: &Context, known: &HashSet<String>) {
    match runtime::sandboxes(&ctx.cri, None).await {
        Ok(list) => {
            for s in list {
                let uid = s
                    .labels
                    .get(crate::cri::labels::POD_UID)
                    .cloned()
                    .unwrap_or_default();
                if known.contains(&uid) {
                    continue;
                }
                tracing::info!(sandbox = %s.id, %uid, "removing a sandbox whose pod is gone");
                if let Err(e) =
                    runtime::remove_sandbox(&ctx.cri, &s.id, runtime::recorded_grace(&s)).await
                {
                    tracing::warn!(sandbox = %s.id, error = %e, "removing an orphaned sandbox");
                    continue;
                }
                remove_host_state(ctx, &uid);
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing sandboxes"),
    }
    if let Ok(entries) = std::fs::read_dir(&ctx.pods_dir) {
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&uid) {
                remove_host_state(ctx, &uid);
            }
        }
    }
    // Found by the chaos suite: a pod removed while a process was still in its cgroup.
    remove_orphaned_pod_cgroups(&ctx.node_name, known);
}

/// Runs the pods bound to `node` until `stop` turns true; then the workers stop and the pods
/// keep running.
pub async fn run_pods(ctx: Arc<Context>, node: String, mut stop: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={node}");
    let cfg = watcher::Config::default().fields(&selector);
    let mut events = watcher::watcher(api.clone(), cfg).default_backoff().boxed();
    let mut workers: HashMap<String, Entry> = HashMap::new();
    let mut listed: Option<HashSet<String>> = None;
    let mut synced = false;
    let mut orphan_tick = tokio::time::interval(ORPHANS_EVERY);
    let mut relist_tick = tokio::time::interval(RELIST_EVERY);
    relist_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: HashMap<String, Fingerprint> = HashMap::new();
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            _ = relist_tick.tick() => {
                match relist(&ctx).await {
                    Ok(now) => {
                        for (uid, e) in &workers {
                            let current = now.get(uid);
                            let known = e.seen.lock().ok().and_then(|s| s.clone());
                            if current != last.get(uid) && current != known.as_ref() {
                                tracing::trace!(%uid, "runtime state changed");
                                e.wake.notify_one();
                            }
                        }
                        last = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "listing the runtime's pods"),
                }
            }
            _ = orphan_tick.tick() => {
                tracing::trace!(synced, workers = workers.len(), "housekeeping");
                if synced {
                    // A safety net for a missed delete event: pods the API no longer lists stop.
                    match api.list(&ListParams::default().fields(&selector)).await {
                        Ok(list) => {
                            let present: HashSet<String> =
                                list.items.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                            for (uid, e) in &workers {
                                if !present.contains(uid) {
                                    tracing::debug!(%uid, "pod no longer listed");
                                    let _ = e.tx.send(None);
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "listing this node's pods"),
                    }
                    workers.retain(|_, e| !e.task.is_finished());
                    let known: HashSet<String> = workers.keys().cloned().collect();
                    remove_orphans(&ctx, &known).await;
                }
            }
            ev = events.next() => {
                let Some(ev) = ev else { break };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching this node's pods");
                        continue;
                    }
                };
                match ev {
                    Event::Init => listed = Some(HashSet::new()),
                    Event::InitApply(pod) | Event::Apply(pod) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        tracing::trace!(%uid, name = ?pod.metadata.name, "pod changed");
                        if let Some(l) = listed.as_mut() {
                            l.insert(uid.clone());
                        }
                        let pod = Arc::new(pod);
                        match workers.get(&uid) {
                            Some(e) if !e.task.is_finished() => {
                                let _ = e.tx.send(Some(pod));
                            }
                            _ => {
                                let (tx, rx) = watch::channel(Some(pod));
                                let wake = Arc::new(Notify::new());
                                let seen = Seen::default();
                                let worker = Worker::new(
                                    ctx.clone(),
                                    uid.clone(),
                                    Arc::clone(&wake),
                                    Arc::clone(&seen),
                                );
                                let task = tokio::spawn(worker.run(rx));
                                workers.insert(uid, Entry { tx, task, wake, seen });
                            }
                        }
                    }
                    Event::Delete(pod) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        tracing::debug!(%uid, known = workers.contains_key(&uid), "pod deleted");
                        if let Some(e) = workers.get(&uid) {
                            let _ = e.tx.send(None);
                        }
                    }
                    Event::InitDone => {
                        // Pods deleted while we were not watching: their workers stop them.
                        if let Some(l) = listed.take() {
                            for (uid, e) in &workers {
                                if !l.contains(uid) {
                                    let _ = e.tx.send(None);
                                }
                            }
                        }
                        if !synced {
                            synced = true;
                            let known: HashSet<String> = workers.keys().cloned().collect();
                            remove_orphans(&ctx, &known).await;
                        }
                    }
                }
            }
        }
    }
    for (_, e) in workers {
        drop(e.tx);
        e.task.abort();
    }
}

/// How many times [`stop_all`] lists the sandboxes again after stopping the ones it saw.
const STOP_PASSES: usize = 3;
/// How long it lets a sandbox that is still being made appear before listing again.
const STOP_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Stops and removes every sandbox this kubelet made (each with its recorded grace period) and
/// the pods' host state. A pod worker aborted in the middle of `RunPodSandbox` leaves a sandbox
/// that containerd finishes after the first listing (its shim, mounts and network would outlive
/// the runtime), so it lists again until none is left, a bounded number of times.
///
/// Once no sandbox is left, every pod directory goes too: a worker aborted between its
/// sandbox's removal and its own clean-up leaves one with no sandbox to find it by (found by
/// the chaos suite).
pub async fn stop_all(ctx: &Context) {
    if !stop_sandboxes(ctx).await {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(&ctx.pods_dir) {
        for e in entries.flatten() {
            remove_host_state(ctx, &e.file_name().to_string_lossy());
        }
    }
}

/// [`stop_all`]'s sandboxes; whether none is left.
async fn stop_sandboxes(ctx: &Context) -> bool {
    for pass in 0..=STOP_PASSES {
        let Ok(list) = runtime::sandboxes(&ctx.cri, None).await else {
            return false;
        };
        if list.is_empty() {
            return true;
        }
        if pass == STOP_PASSES {
            tracing::warn!(
                left = list.len(),
                "sandboxes still listed after {STOP_PASSES} passes: left to the runtime"
            );
            return false;
        }
        let all = list.iter().map(|s| async move {
            let r = runtime::remove_sandbox(&ctx.cri, &s.id, runtime::recorded_grace(s)).await;
            if r.is_ok() {
                remove_host_state(
                    ctx,
                    s.labels.get(crate::cri::labels::POD_UID).map_or("", |u| u),
                );
            }
            r
        });
        for r in futures::future::join_all(all).await {
            if let Err(e) = r {
                tracing::warn!(error = %e, "stopping a pod");
            }
        }
        tokio::time::sleep(STOP_SETTLE).await;
    }
    false
}
