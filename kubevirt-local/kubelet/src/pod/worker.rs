//! One pod's kubelet loop: bring the runtime to what the spec asks (sandbox, init containers in
//! order, containers, restarts with back-off) and report status; on deletion, stop everything
//! gracefully and remove the pod object.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::backoff::{self, Backoff};
use super::config::{self, Downward};
use super::events::{self, Throttle};
use super::manager::{self, Seen};
use super::probe::{Kind, Probes};
use super::start::Run;
use super::status::{self, Observed, Waiting};
use super::volumes::{self, HostVolume};
use super::{PodError, runtime, termination};
use crate::cri::{Cri, client_call};

/// Seconds between SIGTERM and SIGKILL for a pod force-deleted from the API.
pub const FORCED_GRACE: i64 = 2;

/// How long `ErrImagePull` shows before `ImagePullBackOff`.
pub(super) const SHOW_PULL_ERROR: Duration = Duration::from_secs(3);

/// How often a pod that is still changing is looked at (containers being created, backing
/// off, waiting for a ConfigMap, just started...).
const RESYNC: Duration = Duration::from_secs(1);

/// How often a steady pod (every container running, or done for good, nothing waiting) is
/// looked at anyway. What changes it sooner wakes its worker: the pod object (the watch), its
/// containers in the runtime (the manager's relist, [`super::manager`]) and its probes. Upstream's
/// kubelet resyncs such pods every minute (`syncFrequency`); with 100 pods the 1 s pass cost a
/// quarter of a core in CRI calls for nothing.
const STEADY_RESYNC: Duration = Duration::from_secs(20);

/// What every pod worker shares.
pub struct Context {
    /// The API.
    pub client: kube::Client,
    /// The runtime.
    pub cri: Cri,
    /// The node's IP (`status.hostIP`).
    pub host_ip: String,
    /// The node's name (PersistentVolumes' node affinity, events' source).
    pub node_name: String,
    /// Per-pod directories (`<pods>/<uid>/volumes/<name>`).
    pub pods_dir: PathBuf,
    /// Container logs (`<logs>/<ns>_<name>_<uid>/<container>/<attempt>.log`).
    pub logs_dir: PathBuf,
    /// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`/`PORT`), if they can.
    pub api_for_pods: Option<std::net::SocketAddr>,
    /// The node's start slots ([`start_slots`] of them): a pass over a pod that is not steady
    /// (starting, restarting a container, stopping) takes one.
    pub starts: tokio::sync::Semaphore,
}

/// How many pods the runtime works on at once: twice the CPUs. A hundred pods created together
/// otherwise all start together: sandboxes, CNI plugins, shims and crun contend for the CPUs
/// (the local density bench on 2 cores, pods created as fast as their VMs: 566 ms of CPU a VM,
/// P95 28.8 s unbounded; 360 ms and
/// 12.8 s with 4 slots; 8 slots 423 ms and 13.7 s; 2 slots leave the CPUs idle while passes
/// wait on the runtime, 25.9 s; docs/PERFORMANCE.md).
pub fn start_slots() -> usize {
    std::thread::available_parallelism().map_or(4, |n| 2 * n.get())
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("host_ip", &self.host_ip)
            .field("node_name", &self.node_name)
            .field("pods_dir", &self.pods_dir)
            .field("logs_dir", &self.logs_dir)
            .finish_non_exhaustive()
    }
}

/// One pod's worker state: what the runtime cannot tell (back-off timers, why a container waits).
#[derive(Debug)]
pub struct Worker {
    pub(super) ctx: Arc<Context>,
    pub(super) uid: String,
    pub(super) backoff: Backoff,
    pub(super) waiting: HashMap<String, Waiting>,
    pub(super) image_ids: HashMap<String, String>,
    pub(super) volumes: Option<BTreeMap<String, HostVolume>>,
    pub(super) refused: Option<String>,
    last_status: Option<Value>,
    pub(super) pull_failed: HashMap<String, Instant>,
    /// When the volumes' failure was last recorded as a `FailedMount` event.
    mount_events: Throttle,
    /// Termination messages read, by runtime container id.
    messages: HashMap<String, String>,
    /// When this worker first saw the pod.
    seen: Instant,
    /// The running containers' probes.
    probes: Probes,
    /// Whether the last pass found the pod steady: nothing to do until something wakes it.
    steady: bool,
    /// Woken when the pod's containers change in the runtime or a probe shows something new.
    wake: Arc<tokio::sync::Notify>,
    /// What the last pass saw in the runtime, for the relist to compare with.
    known: Seen,
}

fn ns_name(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether `now` differs from `before` only in its status (and the resourceVersion and field
/// ownership that come with any write). A pod with readiness gates is never "only status":
/// conditions others set are its readiness.
fn only_status_changed(before: &Pod, now: &Pod) -> bool {
    let plain = |p: &Pod| {
        let mut m = p.metadata.clone();
        m.resource_version = None;
        m.managed_fields = None;
        m
    };
    let gates = now
        .spec
        .as_ref()
        .is_some_and(|s| s.readiness_gates.as_ref().is_some_and(|g| !g.is_empty()));
    !gates && before.spec == now.spec && plain(before) == plain(now)
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The newest and the previous runtime container of each name.
type ByName = (
    HashMap<String, cri::ContainerStatus>,
    HashMap<String, cri::ContainerStatus>,
);

impl Worker {
    /// A worker for pod `uid`; `wake` makes it look at the pod at once (its containers changed
    /// in the runtime).
    pub(super) fn new(
        ctx: Arc<Context>,
        uid: String,
        wake: Arc<tokio::sync::Notify>,
        known: Seen,
    ) -> Self {
        Self {
            ctx,
            uid,
            backoff: Backoff::default(),
            waiting: HashMap::new(),
            image_ids: HashMap::new(),
            volumes: None,
            refused: None,
            last_status: None,
            pull_failed: HashMap::new(),
            mount_events: Throttle::default(),
            messages: HashMap::new(),
            seen: Instant::now(),
            probes: Probes::new(Arc::clone(&wake)),
            steady: false,
            wake,
            known,
        }
    }

    /// Runs until the pod is gone (`None` on the channel: its containers are stopped) or the
    /// channel closes (the kubelet stops: the pod keeps running).
    pub async fn run(mut self, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
        // A pod removed from the API without a graceful deletion (`--grace-period=0 --force`)
        // gets this long after SIGTERM.
        let mut grace = FORCED_GRACE;
        loop {
            // A pass that may ask the runtime for work waits for a start slot; a steady pod's
            // pass (status only, mostly) does not.
            let ctx = Arc::clone(&self.ctx);
            let slot = match self.steady {
                true => None,
                false => ctx.starts.acquire().await.ok(),
            };
            // The pod as this pass sees it.
            let pod = rx.borrow_and_update().clone();
            match &pod {
                None => {
                    tracing::debug!(uid = %self.uid, grace, "pod gone: stopping it");
                    if let Err(e) = self.terminate(grace).await {
                        tracing::warn!(uid = %self.uid, error = %e, "stopping a deleted pod");
                    }
                    return;
                }
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    grace = p
                        .metadata
                        .deletion_grace_period_seconds
                        .or(p
                            .spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds))
                        .unwrap_or(30);
                    match self.terminate(grace).await {
                        Ok(()) => self.final_delete(p).await,
                        Err(e) => tracing::warn!(uid = %self.uid, error = %e, "stopping a pod"),
                    }
                    grace = 0;
                }
                Some(p) => {
                    if let Err(e) = self.sync(p).await {
                        let (ns, name) = ns_name(p);
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "pod sync");
                    }
                }
            }
            drop(slot);
            let wake = Arc::clone(&self.wake);
            let next = tokio::time::Instant::now() + self.next_pass();
            loop {
                tokio::select! {
                    r = rx.changed() => {
                        if r.is_err() {
                            return;
                        }
                        // A new status alone (this worker's own status write, mostly) changes
                        // nothing to do, as upstream's kubelet only reconciles on it.
                        let now = rx.borrow();
                        if let (Some(before), Some(now)) = (&pod, &*now)
                            && only_status_changed(before, now)
                        {
                            continue;
                        }
                    }
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(next) => {}
                }
                break;
            }
        }
    }

    /// How long until the next pass when nothing wakes the worker.
    fn next_pass(&self) -> Duration {
        if !self.steady {
            return RESYNC;
        }
        // A service-account token due for renewal is the one timer a steady pod has.
        let refresh = self
            .volumes
            .as_ref()
            .and_then(volumes::next_refresh)
            .map(|t| t.saturating_duration_since(Instant::now()));
        refresh.map_or(STEADY_RESYNC, |r| r.clamp(RESYNC, STEADY_RESYNC))
    }

    /// Stops and removes everything the pod has on this node.
    async fn terminate(&mut self, grace: i64) -> Result<(), PodError> {
        for s in runtime::sandboxes(&self.ctx.cri, Some(&self.uid)).await? {
            runtime::remove_sandbox(&self.ctx.cri, &s.id, grace).await?;
        }
        super::cleanup::remove_host_state(&self.ctx, &self.uid);
        Ok(())
    }

    /// The pod object's final delete, as the kubelet does: grace 0, only this uid.
    async fn final_delete(&self, pod: &Pod) {
        let (ns, name) = ns_name(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting a stopped pod")
            }
        }
    }

    async fn by_name(&self, sandbox: &str) -> Result<ByName, PodError> {
        let mut groups: HashMap<String, Vec<cri::Container>> = HashMap::new();
        for c in runtime::containers(&self.ctx.cri, sandbox).await? {
            let name = c
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            groups.entry(name).or_default().push(c);
        }
        let (mut latest, mut previous) = (HashMap::new(), HashMap::new());
        for (name, mut list) in groups {
            list.sort_by_key(|c| std::cmp::Reverse(c.metadata.as_ref().map_or(0, |m| m.attempt)));
            if let Some(c) = list.first() {
                latest.insert(
                    name.clone(),
                    runtime::container_status(&self.ctx.cri, &c.id).await?,
                );
            }
            if let Some(c) = list.get(1) {
                previous.insert(name, runtime::container_status(&self.ctx.cri, &c.id).await?);
            }
        }
        Ok((latest, previous))
    }

    /// What the runtime runs for the pod now, without changing anything: the IP and containers
    /// of its ready sandbox (none: empty).
    async fn current(&self) -> (String, ByName) {
        let none = || (String::new(), (HashMap::new(), HashMap::new()));
        let Ok(list) = runtime::sandboxes(&self.ctx.cri, Some(&self.uid)).await else {
            return none();
        };
        for s in &list {
            if let Ok((true, ip)) = runtime::sandbox_ip(&self.ctx.cri, &s.id).await
                && let Ok(observed) = self.by_name(&s.id).await
            {
                return (ip, observed);
            }
        }
        none()
    }

    /// Makes sure the pod has a ready sandbox; returns its id, IP and configuration, and whether
    /// it was made just now (it has no containers yet).
    async fn sandbox(
        &mut self,
        pod: &Pod,
    ) -> Result<(String, String, cri::PodSandboxConfig, bool), PodError> {
        let existing = runtime::sandboxes(&self.ctx.cri, Some(&self.uid)).await?;
        let attempt = existing
            .first()
            .and_then(|s| s.metadata.as_ref())
            .map_or(0, |m| m.attempt);
        if let Some(s) = existing.first() {
            let (ready, ip) = runtime::sandbox_ip(&self.ctx.cri, &s.id).await?;
            if ready {
                return Ok((
                    s.id.clone(),
                    ip,
                    config::sandbox_config(pod, attempt, &self.ctx.logs_dir, &self.ctx.node_name),
                    false,
                ));
            }
        }
        for s in &existing {
            runtime::remove_sandbox(&self.ctx.cri, &s.id, 0).await?;
        }
        let attempt = if existing.is_empty() { 0 } else { attempt + 1 };
        let cfg = config::sandbox_config(pod, attempt, &self.ctx.logs_dir, &self.ctx.node_name);
        let dir = config::log_dir(&self.ctx.logs_dir, pod);
        std::fs::create_dir_all(&dir).map_err(|source| PodError::Io { path: dir, source })?;
        let started = Instant::now();
        let id = self
            .ctx
            .cri
            .runtime
            .clone()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(client_call("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id;
        // RunPodSandbox includes the network (CNI) and the pause container's start.
        tracing::debug!(uid = %self.uid, took = ?started.elapsed(), "sandbox ready");
        let (_, ip) = runtime::sandbox_ip(&self.ctx.cri, &id).await?;
        Ok((id, ip, cfg, true))
    }

    /// One pass over the pod.
    async fn sync(&mut self, pod: &Pod) -> Result<(), PodError> {
        // Until this pass shows otherwise, the pod is looked at again soon.
        self.steady = false;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            // A finished pod never runs again; its sandbox goes, its containers stay for logs.
            for s in runtime::sandboxes(&self.ctx.cri, Some(&self.uid)).await? {
                if s.state == cri::PodSandboxState::SandboxReady as i32 {
                    let _ = self
                        .ctx
                        .cri
                        .runtime
                        .clone()
                        .stop_pod_sandbox(cri::StopPodSandboxRequest {
                            pod_sandbox_id: s.id,
                        })
                        .await;
                }
            }
            self.steady = true;
            return Ok(());
        }
        if self.refused.is_none()
            && let Err(e) = volumes::check(pod)
        {
            self.refused = Some(e.to_string());
        }
        if self.refused.is_some() {
            self.report(pod, String::new(), (HashMap::new(), HashMap::new()))
                .await?;
            // Failed for good: only a change of the pod wakes it.
            self.steady = true;
            return Ok(());
        }
        // Volumes first, as upstream: a pod whose volumes cannot be set up gets no sandbox.
        if self.volumes.is_none() {
            let dir = self.ctx.pods_dir.join(&self.uid).join("volumes");
            let started = Instant::now();
            match volumes::prepare(&self.ctx.client, pod, &dir, &self.ctx.node_name).await {
                Ok(v) => {
                    tracing::debug!(uid = %self.uid, took = ?started.elapsed(), "volumes ready");
                    self.volumes = Some(v);
                    self.mount_events.clear();
                    for c in &pod.spec.clone().unwrap_or_default().containers {
                        self.waiting.remove(&c.name);
                    }
                }
                Err(e) if e.transient() => {
                    if let Some(message) = e.failed_mount()
                        && self.mount_events.due(&message, Instant::now())
                    {
                        let ctx = &self.ctx;
                        events::warn(&ctx.client, &ctx.node_name, pod, "FailedMount", &message)
                            .await;
                    }
                    for c in &pod.spec.clone().unwrap_or_default().containers {
                        self.waiting.insert(
                            c.name.clone(),
                            Waiting {
                                reason: "ContainerCreating".into(),
                                message: e.to_string(),
                            },
                        );
                    }
                    // A kubelet that restarted reports what still runs, not an empty pod.
                    let (ip, observed) = self.current().await;
                    return self.report(pod, ip, observed).await;
                }
                Err(e) => {
                    self.refused = Some(e.to_string());
                    let none = (HashMap::new(), HashMap::new());
                    return self.report(pod, String::new(), none).await;
                }
            }
        }
        if let Some(v) = self.volumes.as_mut()
            && volumes::next_refresh(v).is_some_and(|t| t <= Instant::now())
            && let Err(e) = volumes::refresh(&self.ctx.client, pod, v, Instant::now()).await
        {
            tracing::warn!(uid = %self.uid, error = %e, "renewing a service account token");
        }
        let (sandbox, ip, sandbox_cfg, fresh) = self.sandbox(pod).await?;
        let downward = Downward {
            pod_ip: ip.clone(),
            host_ip: self.ctx.host_ip.clone(),
            api: self.ctx.api_for_pods,
            ..Default::default()
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        // A sandbox made just now has no containers: no need to ask.
        let observed = if fresh {
            (HashMap::new(), HashMap::new())
        } else {
            self.by_name(&sandbox).await?
        };
        let latest = &observed.0;
        // Whether this pass asked the runtime for anything (else what it saw is still current).
        let mut acted = false;
        let run = Run {
            sandbox: &sandbox,
            cfg: &sandbox_cfg,
            downward: &downward,
        };
        let mut init_done = true;
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            let at = format!("spec.initContainers[{i}]");
            match latest.get(&c.name) {
                Some(s) if status::exited(s) && s.exit_code == 0 => continue,
                Some(s) if status::exited(s) => {
                    if policy != "Never" {
                        acted = true;
                        self.restart(pod, c, &at, s, &run).await;
                    }
                }
                Some(s) if status::running(s) => {}
                Some(s) => {
                    acted = true;
                    self.start_created(c, s).await;
                }
                None => {
                    acted = true;
                    self.start(pod, c, &at, 0, &run).await;
                }
            }
            init_done = false;
            break;
        }
        if init_done {
            for (i, c) in spec.containers.iter().enumerate() {
                let at = format!("spec.containers[{i}]");
                match latest.get(&c.name) {
                    None => {
                        acted = true;
                        self.start(pod, c, &at, 0, &run).await;
                    }
                    Some(s) if status::running(s) => {
                        if let Some((kind, message)) = self.probes.take_kill(&c.name) {
                            acted = true;
                            self.kill_unhealthy(pod, c, s, kind, &message).await;
                            continue;
                        }
                        self.probes.ensure(&self.ctx, pod, c, &s.id, &ip);
                        self.waiting.remove(&c.name);
                        let ran = jiff::Timestamp::now().as_nanosecond() - i128::from(s.started_at);
                        if ran > backoff::RESET_AFTER.as_nanos() as i128 {
                            self.backoff.reset(&c.name);
                        }
                    }
                    Some(s) if status::exited(s) => {
                        let again = match policy.as_str() {
                            "Never" => false,
                            "OnFailure" => s.exit_code != 0,
                            _ => true,
                        };
                        if again {
                            acted = true;
                            self.restart(pod, c, &at, s, &run).await;
                        } else {
                            self.waiting.remove(&c.name);
                        }
                    }
                    Some(s) => {
                        acted = true;
                        self.start_created(c, s).await;
                    }
                }
            }
        }
        let observed = if acted {
            self.by_name(&sandbox).await?
        } else {
            observed
        };
        let running: HashMap<String, String> = observed
            .0
            .iter()
            .filter(|(_, s)| status::running(s))
            .map(|(name, s)| (name.clone(), s.id.clone()))
            .collect();
        self.probes.retain(&running);
        // Steady: this pass changed nothing, nothing waits (no back-off, no image or config
        // error) and every container runs or is done for good; a container that stops wakes
        // the worker through the relist.
        let settled = spec.containers.iter().all(|c| {
            observed.0.get(&c.name).is_some_and(|s| {
                status::running(s) || (status::exited(s) && !self.waiting.contains_key(&c.name))
            })
        });
        let steady = !acted && init_done && settled && self.waiting.is_empty();
        let attempt = sandbox_cfg.metadata.as_ref().map_or(0, |m| m.attempt);
        let seen = manager::fingerprint(
            &sandbox,
            attempt,
            observed.0.values().chain(observed.1.values()),
        );
        if let Ok(mut k) = self.known.lock() {
            *k = Some(seen);
        }
        self.report(pod, ip, observed).await?;
        self.steady = steady;
        Ok(())
    }

    /// Kills container `c` (runtime container `s`) whose `kind` probe failed for good, as
    /// upstream does: a `Killing` event, then the stop with the probe's (or the pod's) grace
    /// period; the next pass restarts it as the restart policy says.
    async fn kill_unhealthy(
        &mut self,
        pod: &Pod,
        c: &k8s_openapi::api::core::v1::Container,
        s: &cri::ContainerStatus,
        kind: Kind,
        message: &str,
    ) {
        let probe = match kind {
            Kind::Startup => c.startup_probe.as_ref(),
            _ => c.liveness_probe.as_ref(),
        };
        let grace = probe
            .and_then(|p| p.termination_grace_period_seconds)
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        let ctx = &self.ctx;
        events::normal(&ctx.client, &ctx.node_name, pod, "Killing", message).await;
        if let Err(e) = runtime::stop_container(&ctx.cri, &s.id, grace).await {
            tracing::warn!(uid = %self.uid, container = %c.name, error = %e, "killing an unhealthy container");
        }
    }

    /// Writes the pod's status through `pods/status` when it changed.
    async fn report(
        &mut self,
        pod: &Pod,
        ip: String,
        (mut latest, mut previous): ByName,
    ) -> Result<(), PodError> {
        let log_dir = config::log_dir(&self.ctx.logs_dir, pod);
        for statuses in [&mut latest, &mut previous] {
            termination::fill(pod, statuses, &mut self.messages, &log_dir);
        }
        let mut image_ids = self.image_ids.clone();
        for (name, s) in &latest {
            if !s.image_ref.is_empty() {
                image_ids
                    .entry(name.clone())
                    .or_insert_with(|| s.image_ref.clone());
            }
        }
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .or_else(|| Some(now()));
        let probes = latest
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), self.probes.view(name, &s.id)?)))
            .collect();
        let observed = Observed {
            pod_ip: ip,
            host_ip: self.ctx.host_ip.clone(),
            start_time,
            containers: latest,
            previous,
            waiting: self.waiting.clone(),
            image_ids,
            refused: self.refused.clone(),
            probes,
        };
        let status = status::compute(pod, &observed);
        if self.last_status.as_ref() == Some(&status) {
            return Ok(());
        }
        let was_running = self.last_status.as_ref().map(|s| &s["phase"]) == Some(&json!("Running"));
        if status["phase"] == "Running" && !was_running {
            // The pod's start as the kubelet sees it, and as its creator does (the API's clock
            // is this host's; creationTimestamp has whole seconds).
            let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let since = created.map(|t| jiff::Timestamp::now().duration_since(t).as_secs_f64());
            tracing::debug!(
                uid = %self.uid,
                since_seen_s = self.seen.elapsed().as_secs_f64(),
                since_creation_s = since,
                "pod running"
            );
        }
        let (ns, name) = ns_name(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .map_err(|e| PodError::Status(Box::new(e)))?;
        self.last_status = Some(status);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_new_status_alone_needs_no_pass_but_anything_else_does() {
        let before = pod(json!({
            "metadata": {"name": "p", "resourceVersion": "1", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }));
        let mut now = before.clone();
        now.metadata.resource_version = Some("2".into());
        now.status = Some(serde_json::from_value(json!({"phase": "Running"})).unwrap());
        assert!(only_status_changed(&before, &now));

        let mut deleting = now.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert!(!only_status_changed(&before, &deleting));

        let mut relabelled = now.clone();
        relabelled.metadata.labels = None;
        assert!(!only_status_changed(&before, &relabelled));

        let mut respec = now.clone();
        respec.spec.as_mut().unwrap().containers[0].image = Some("busybox:2".into());
        assert!(!only_status_changed(&before, &respec));

        // Readiness gates make others' conditions the pod's readiness: always a pass.
        let gated = |p: &Pod| {
            let mut p = p.clone();
            p.spec.as_mut().unwrap().readiness_gates = Some(vec![
                serde_json::from_value(json!({"conditionType": "x"})).unwrap(),
            ]);
            p
        };
        assert!(!only_status_changed(&gated(&before), &gated(&now)));
    }

    #[test]
    fn the_fingerprint_of_what_a_pass_saw_matches_the_relists() {
        let status = |id: &str, state: i32, attempt: u32| cri::ContainerStatus {
            id: id.into(),
            state,
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt,
            }),
            ..Default::default()
        };
        let running = cri::ContainerState::ContainerRunning as i32;
        let exited = cri::ContainerState::ContainerExited as i32;
        let seen = [status("c2", running, 1), status("c1", exited, 0)];
        let ready = cri::PodSandboxState::SandboxReady as i32;
        // The relist's: sandboxes then containers, sorted.
        let mut relist: manager::Fingerprint = vec![
            ("s1".into(), ready, 0),
            ("c2".into(), running, 1),
            ("c1".into(), exited, 0),
        ];
        relist.sort();
        assert_eq!(manager::fingerprint("s1", 0, seen.iter()), relist);
        assert_ne!(manager::fingerprint("s1", 1, seen.iter()), relist);
    }
}
