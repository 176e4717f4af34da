//! Container probes, as upstream's kubelet runs them: for each running container a task runs its
//! startup probe until it passes, then its liveness and readiness probes, each on its own period
//! after `initialDelaySeconds`, with `timeoutSeconds`, `successThreshold` and `failureThreshold`
//! (defaults 1 s, 1, 3; period 10 s). Readiness makes the container (and the pod) Ready; a
//! startup or liveness probe that fails `failureThreshold` times in a row asks the pod's worker
//! to kill the container, which then restarts as its `restartPolicy` says. Every failure is an
//! `Unhealthy` event (repeats throttled), every kill a `Killing` event.
//!
//! Results belong to one runtime container: a restarted container starts unready and unstarted.

pub mod check;
pub mod grpc;
pub mod http;
mod tracker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::task::JoinHandle;

use self::check::attempt;
pub use self::tracker::Kind;
use self::tracker::{Tracker, Verdict};
use super::events::{self, Throttle};
use super::worker::Context;

/// What a container's probes have found so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeView {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe passes (or there is none).
    pub ready: bool,
}

#[derive(Debug)]
struct Shared {
    view: ProbeView,
    /// A startup or liveness probe failed for good: which, and the `Killing` message.
    kill: Option<(Kind, String)>,
}

/// One running container's probe task.
#[derive(Debug)]
struct Running {
    id: String,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The probes of one pod's containers, by container name.
#[derive(Debug, Default)]
pub struct Probes {
    by_name: HashMap<String, Running>,
    /// Woken whenever a probe changes what it shows (started, ready, kill): the pod's worker
    /// reports at once instead of polling the probes.
    wake: Arc<tokio::sync::Notify>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether container `c` has any probe.
fn probed(c: &Container) -> bool {
    c.startup_probe.is_some() || c.liveness_probe.is_some() || c.readiness_probe.is_some()
}

impl Probes {
    /// Probes that wake `wake` whenever what they show changes.
    pub fn new(wake: Arc<tokio::sync::Notify>) -> Self {
        Self {
            by_name: HashMap::new(),
            wake,
        }
    }

    /// Starts the probes of container `c` of `pod`, running as runtime container `id` in the pod
    /// at `pod_ip`, unless they already run for that container.
    pub fn ensure(&mut self, ctx: &Arc<Context>, pod: &Pod, c: &Container, id: &str, pod_ip: &str) {
        if !probed(c) || self.by_name.get(&c.name).is_some_and(|r| r.id == id) {
            return;
        }
        let shared = Arc::new(Mutex::new(Shared {
            view: ProbeView {
                started: c.startup_probe.is_none(),
                ready: c.readiness_probe.is_none(),
            },
            kill: None,
        }));
        let task = tokio::spawn(run(
            Arc::clone(ctx),
            pod.clone(),
            c.clone(),
            id.to_string(),
            pod_ip.to_string(),
            Arc::clone(&shared),
            Arc::clone(&self.wake),
        ));
        self.by_name.insert(
            c.name.clone(),
            Running {
                id: id.to_string(),
                shared,
                task,
            },
        );
    }

    /// Stops the probes of containers that no longer run as the runtime container they were
    /// started for (`running` names the running ones: name → runtime id).
    pub fn retain(&mut self, running: &HashMap<String, String>) {
        self.by_name
            .retain(|name, r| running.get(name).is_some_and(|id| *id == r.id));
    }

    /// What container `name` (runtime container `id`) has shown; `None` when it has no probes.
    pub fn view(&self, name: &str, id: &str) -> Option<ProbeView> {
        let r = self.by_name.get(name).filter(|r| r.id == id)?;
        Some(lock(&r.shared).view)
    }

    /// Which probe failed for good and the `Killing` message, when a startup or liveness probe
    /// of container `name` did (its probes stop: the container is to be killed and restarted).
    pub fn take_kill(&mut self, name: &str) -> Option<(Kind, String)> {
        let message = lock(&self.by_name.get(name)?.shared).kill.take()?;
        self.by_name.remove(name);
        Some(message)
    }
}

/// The probe loop of one container.
async fn run(
    ctx: Arc<Context>,
    pod: Pod,
    c: Container,
    id: String,
    pod_ip: String,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<tokio::sync::Notify>,
) {
    let start = Instant::now();
    let mut trackers: Vec<Tracker> = [
        (Kind::Startup, &c.startup_probe),
        (Kind::Liveness, &c.liveness_probe),
        (Kind::Readiness, &c.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(kind, p)| Some(Tracker::new(kind, p.clone()?, start)))
    .collect();
    let mut throttles: HashMap<Kind, Throttle> = HashMap::new();
    loop {
        let started = lock(&shared).view.started;
        let now = Instant::now();
        for t in trackers.iter_mut() {
            // The startup probe runs until it passes; the others only after that.
            if (t.kind == Kind::Startup) == started || t.due > now {
                continue;
            }
            let outcome = attempt(&ctx.cri, &c, &id, &t.probe, &pod_ip).await;
            let verdict = t.observe(outcome, Instant::now());
            if let Some(why) = t.failure() {
                let message = format!("{} probe failed: {why}", t.kind.title());
                let throttle = throttles.entry(t.kind).or_default();
                if throttle.due(&message, Instant::now()) {
                    events::warn(&ctx.client, &ctx.node_name, &pod, "Unhealthy", &message).await;
                }
            }
            let mut s = lock(&shared);
            let before = s.view;
            match verdict {
                Verdict::Started => s.view.started = true,
                Verdict::Ready(ready) => s.view.ready = ready,
                Verdict::Kill => {
                    let message = format!(
                        "Container {} failed {} probe, will be restarted",
                        c.name,
                        t.kind.word()
                    );
                    s.kill = Some((t.kind, message));
                    drop(s);
                    wake.notify_one();
                    return;
                }
                Verdict::Same => {}
            }
            if s.view != before {
                drop(s);
                wake.notify_one();
            }
        }
        let started = lock(&shared).view.started;
        let next = trackers
            .iter()
            .filter(|t| (t.kind == Kind::Startup) != started)
            .map(|t| t.due)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(10));
        tokio::time::sleep_until(next.max(Instant::now() + Duration::from_millis(50)).into()).await;
    }
}
