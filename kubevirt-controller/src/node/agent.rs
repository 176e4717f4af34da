//! The node agent's loop: every VMI placed on this node (or, on the local single-node plane,
//! not placed yet) gets a launcher; the launcher's state is written back on the VMI; deleting
//! the VMI shuts the guest down (ACPI power button, forced stop after the grace period) before
//! the VMI's finalizer is removed.
//!
//! In [`AgentMode::Pods`] the launcher is not spawned here but found in the VMI's virt-launcher
//! pod, prepared and started once ([`super::pod`]); everything after (the reports, pause at
//! start, the shutdown on delete) is the same code as in direct mode.
//!
//! The agent may die and restart (kill -9, an upgrade) while guests run: their launchers run on
//! (see [`super::launcher`]). A restarted agent adopts the launcher it finds live in a VMI's run
//! directory instead of starting another, so the VMI stays Running on the same guest; a dead run
//! directory's final status gives the VMI its outcome; launchers whose VMI is gone (or final)
//! are shut down gracefully and their run directories removed ([`super::adopt`]). In pods mode
//! the launcher root is swept of run directories that belong to nothing ([`super::sweep`]).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_api::defaults::DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS;
use std::sync::Mutex;

use super::adopt;
use super::events;
use super::launcher::Launcher;
use super::memory;
use super::migration::{self, TargetStep};
use super::report::{Report, io_error_event, patch};
use super::sweep;
use super::{AgentMode, NodeConfig, NodeError, owner, pod};
use crate::events::Recorder;
use crate::vm::instance::{is_deleting, is_final, phase};
use kubevirt_launcher_protocol::{ExitStatus, FinalStatus, Phase};

/// The finalizer that keeps a VMI until its guest is down (upstream's name).
pub const FINALIZER: &str = "kubevirt.io/foregroundDeleteVirtualMachine";
/// How often a running launcher is asked for its state.
const POLL: Duration = Duration::from_millis(500);
/// Beyond the grace period, how long a launcher may take to exit before it is killed.
const EXIT_SLACK: Duration = Duration::from_secs(10);

/// One launcher, borrowed by one sync at a time (its own), across its control requests.
type Shared = Arc<tokio::sync::Mutex<Launcher>>;

pub(super) struct Context {
    pub(super) client: Client,
    pub(super) config: NodeConfig,
    mode: AgentMode,
    /// Events on the VMIs, from `virt-handler` on this node.
    pub(super) recorder: Recorder,
    /// The launchers by VMI uid. The map is locked only to look up, add or remove an entry,
    /// never across I/O: a launcher that does not answer delays its own VMI only.
    launchers: Mutex<HashMap<String, Shared>>,
    /// Pods mode: the pod IP of each VMI's virt-launcher pod, by VMI uid, once known.
    pod_ips: Mutex<HashMap<String, String>>,
    /// Pods mode: live-migration target launchers on this node, by migration uid.
    targets: Mutex<HashMap<String, Shared>>,
    /// Pods mode: the migrations this agent has started as their source, by migration uid.
    outgoing: Mutex<std::collections::HashSet<String>>,
}

impl Context {
    fn launcher(&self, uid: &str) -> Option<Shared> {
        self.map().get(uid).cloned()
    }

    /// The run directory of `vmi` in this agent's mode.
    fn run_dir(&self, vmi: &VirtualMachineInstance) -> PathBuf {
        match &self.mode {
            AgentMode::Direct => run_dir(vmi, &self.config),
            AgentMode::Pods { .. } => {
                migration::active_run_dir(&self.config.run_root, &vmi.uid().unwrap_or_default())
            }
        }
    }

    /// The target launcher of migration `id`, if this agent follows it.
    pub(super) fn target(&self, id: &str) -> Option<Shared> {
        locked(&self.targets).get(id).cloned()
    }

    /// Follows `l` as the target launcher of migration `id`.
    pub(super) fn add_target(&self, id: &str, l: Launcher) -> Shared {
        let l = Arc::new(tokio::sync::Mutex::new(l));
        locked(&self.targets).insert(id.to_string(), l.clone());
        l
    }

    /// Stops following the target launcher of migration `id`.
    pub(super) fn take_target(&self, id: &str) -> Option<Shared> {
        locked(&self.targets).remove(id)
    }

    /// Whether this agent started migration `id` as its source.
    pub(super) fn outgoing_started(&self, id: &str) -> bool {
        locked(&self.outgoing).contains(id)
    }

    /// Notes that this agent started migration `id` as its source.
    pub(super) fn mark_outgoing(&self, id: &str) {
        locked(&self.outgoing).insert(id.to_string());
    }

    /// The keys of the launchers this agent follows: VMI uids and migration uids (targets).
    pub(super) fn followed(&self) -> std::collections::HashSet<String> {
        let mut keys: std::collections::HashSet<String> = self.map().keys().cloned().collect();
        keys.extend(locked(&self.targets).keys().cloned());
        keys
    }

    fn pod_ips(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.pod_ips
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shared>> {
        self.launchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs the node agent in `mode` until `shutdown` resolves. In direct mode, launchers still
/// running then are stopped; in pods mode they run on in their pods (a restarted agent attaches
/// to them again).
pub async fn run(
    client: Client,
    config: NodeConfig,
    mode: AgentMode,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone());
    if mode == AgentMode::Direct {
        // The run directories left by an earlier agent, taken before this one starts any.
        let earlier = adopt::run_dirs(&config.run_root);
        tokio::spawn(adopt::stop_orphans(
            vmis.clone(),
            config.node_name.clone(),
            earlier,
        ));
    }
    let direct = mode == AgentMode::Direct;
    if !direct {
        // The pods' launchers share the image cache and run as LAUNCHER_UID.
        let cache = config.cache_dir.clone();
        let owned = tokio::task::spawn_blocking(move || owner::own_tree(&cache)).await;
        if let Ok(Err(e)) = owned {
            tracing::warn!(error = %e, "the image cache is not the launchers': their pulls will fail");
        }
    }
    let sweeper = tokio::spawn(sweep_memory_states(client.clone(), config.run_root.clone()));
    let recorder = Recorder::new(client.clone(), events::COMPONENT).on_host(&config.node_name);
    let ctx = Arc::new(Context {
        client,
        recorder,
        config,
        mode,
        launchers: Mutex::new(HashMap::new()),
        pod_ips: Mutex::new(HashMap::new()),
        targets: Mutex::new(HashMap::new()),
        outgoing: Mutex::new(Default::default()),
    });
    let controller = Controller::new(vmis, watcher::Config::default());
    // Pods mode: what the kubelet made below the launcher root for nothing is swept.
    let orphans = (!direct).then(|| tokio::spawn(sweep::run(ctx.clone(), controller.store())));
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| {
            if let Some(line) = crate::runtime::describe(r) {
                on_sync(line);
            }
            futures::future::ready(())
        })
        .await;
    sweeper.abort();
    if let Some(orphans) = orphans {
        orphans.abort();
    }
    let launchers: Vec<Shared> = ctx.map().drain().map(|(_, l)| l).collect();
    if direct {
        for l in launchers {
            l.lock().await.kill().await;
        }
    }
}

/// How often the memory-state store is compared with the snapshot contents.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Removes the stored memory states whose VirtualMachineSnapshotContent is gone, every
/// [`SWEEP_EVERY`]; nothing is removed while the contents cannot be listed.
async fn sweep_memory_states(client: Client, run_root: PathBuf) {
    use kubevirt_api::snapshot::v1beta1::VirtualMachineSnapshotContent;
    let contents: Api<VirtualMachineSnapshotContent> = Api::all(client);
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        if memory::list(&run_root).is_empty() {
            continue;
        }
        let Ok(listed) = contents.list(&Default::default()).await else {
            continue;
        };
        let names = listed
            .items
            .iter()
            .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
            .collect();
        for (ns, name) in memory::sweep(&run_root, &names) {
            tracing::info!(namespace = %ns, content = %name, "removed the memory state of a deleted snapshot content");
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn error_policy(_vmi: Arc<VirtualMachineInstance>, _e: &NodeError, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

/// Whether this agent runs `vmi`. In pods mode only the VMI controller places VMIs (it sets
/// `nodeName` once the pod is bound and running).
fn mine(vmi: &VirtualMachineInstance, config: &NodeConfig, mode: &AgentMode) -> bool {
    match vmi.status.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(node) => node == config.node_name,
        None => {
            *mode == AgentMode::Direct
                && config.claim_unscheduled
                && matches!(phase(vmi), "" | "Pending")
        }
    }
}

async fn reconcile(
    vmi: Arc<VirtualMachineInstance>,
    ctx: Arc<Context>,
) -> Result<Action, NodeError> {
    let namespace = vmi.namespace().unwrap_or_default();
    let api: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let node = ctx.config.node_name.as_str();
    // A migration's target being prepared here: the VMI is synced again soon whatever else.
    let mut preparing = false;
    if let AgentMode::Pods { working_dir } = &ctx.mode
        && !is_deleting(&vmi)
    {
        match migration::target(&vmi, &api, &ctx, working_dir).await? {
            TargetStep::None => {}
            TargetStep::Poll => preparing = true,
            TargetStep::TookOver(l) => {
                let uid = vmi.uid().unwrap_or_default();
                ctx.map()
                    .insert(uid.clone(), Arc::new(tokio::sync::Mutex::new(*l)));
                ctx.pod_ips().remove(&uid);
            }
        }
        if migration::moved_away(&vmi, node) {
            // Its guest runs on another node now: that node's agent follows it.
            let uid = vmi.uid().unwrap_or_default();
            ctx.map().remove(&uid);
            ctx.pod_ips().remove(&uid);
            if !migration::moved_to(&vmi, node) {
                migration::release(&pod::run_dir(&ctx.config.run_root, &uid));
                migration::forget_active(&ctx.config.run_root, &uid);
            }
            return Ok(Action::await_change());
        }
    }
    let mine = mine(&vmi, &ctx.config, &ctx.mode) || migration::moved_to(&vmi, node);
    if !mine {
        // Another node's VMI (its finalizer is that node's agent's to remove).
        return Ok(match preparing {
            true => Action::requeue(POLL),
            false => Action::await_change(),
        });
    }
    let action = finalizer(&api, FINALIZER, vmi, |event| async {
        match event {
            Event::Apply(vmi) => apply(&vmi, &api, &ctx).await,
            Event::Cleanup(vmi) => cleanup(&vmi, &ctx).await,
        }
    })
    .await
    .map_err(|e| NodeError::Reconcile(Box::new(e)))?;
    Ok(if preparing {
        Action::requeue(POLL)
    } else {
        action
    })
}

/// The run directory of `vmi` (`<run_root>/<ns>/<name>-<uid[..8]>`).
pub fn run_dir(vmi: &VirtualMachineInstance, config: &NodeConfig) -> PathBuf {
    run_dir_of(
        &config.run_root,
        &vmi.namespace().unwrap_or_default(),
        &vmi.name_any(),
        &vmi.uid().unwrap_or_default(),
    )
}

/// The run directory of the VMI `namespace/name` with `uid` below `run_root`.
pub fn run_dir_of(run_root: &std::path::Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    let short = uid.get(..uid.len().min(8)).unwrap_or(uid);
    run_root.join(namespace).join(format!("{name}-{short}"))
}

async fn apply(
    vmi: &VirtualMachineInstance,
    api: &Api<VirtualMachineInstance>,
    ctx: &Context,
) -> Result<Action, NodeError> {
    let uid = vmi.uid().unwrap_or_default();
    // The controller never syncs one VMI twice at once, so nobody adds this uid meanwhile.
    // A final VMI is not adopted back to life: a launcher an earlier agent left for it is
    // stopped by `adopt::stop_orphans` (direct mode) or ends with its pod.
    let found = match ctx.launcher(&uid) {
        None if is_final(vmi) => None,
        _ => find(vmi, ctx).await?,
    };
    let mut report = match found {
        Some(l) => {
            let mut l = l.lock().await;
            let handed_over = match ctx.mode {
                AgentMode::Pods { .. } => migration::source(vmi, &mut l, api, ctx).await?,
                AgentMode::Direct => None,
            };
            if handed_over.is_some() {
                // Its guest runs in a migration's target now: nothing of it goes on the VMI.
                let dir = l.run_dir().to_path_buf();
                drop(l);
                ctx.map().remove(&uid);
                if migration::active_run_dir(&ctx.config.run_root, &uid) != dir {
                    migration::release(&dir);
                }
                return Ok(Action::requeue(POLL));
            }
            follow(&mut l, vmi, ctx).await?
        }
        None if is_final(vmi) => return Ok(Action::await_change()),
        None if ctx.mode == AgentMode::Direct && matches!(phase(vmi), "" | "Pending") => {
            let dir = ctx.run_dir(vmi);
            match pod::resume_from(vmi, &ctx.config, &dir) {
                Err(why) => Report::StartFailed(why),
                Ok(resume) => {
                    let from = resume.map(|n| dir.join(memory::RUN_DIR_SNAPSHOTS).join(n));
                    let l = Launcher::spawn(&ctx.config, vmi, dir, from.as_deref()).await?;
                    ctx.map()
                        .insert(uid.clone(), Arc::new(tokio::sync::Mutex::new(l)));
                    Report::Launching
                }
            }
        }
        // Its launcher is gone (or, in its pod, not listening yet): the final status it left
        // says how it ended.
        None => match FinalStatus::read(&ctx.run_dir(vmi)) {
            Ok(Some(last)) => Report::Exited {
                code: None,
                last: Some(last),
            },
            // The pod's launcher has not opened its socket yet: a non-root one cannot until
            // its run directory is its own.
            Ok(None) if ctx.mode != AgentMode::Direct && phase(vmi) != "Running" => {
                owner::prepare_run_dir(&ctx.run_dir(vmi))?;
                Report::Launching
            }
            Ok(None) => Report::Lost,
            Err(e) => Report::Exited {
                code: None,
                last: Some(FinalStatus::new(
                    ExitStatus::Failed,
                    Some(format!("its final status is unreadable: {e}")),
                )),
            },
        },
    };
    if report.handed_over() {
        // Its guest was handed to a migration's target: the outcome is the target's to report
        // (this agent takes it over, or the target node's agent does).
        return Ok(Action::requeue(POLL));
    }
    let alive = matches!(report, Report::Launching | Report::Status(_));
    if !alive {
        ctx.map().remove(&uid);
        ctx.pod_ips().remove(&uid);
    }
    if ctx.mode != AgentMode::Direct {
        show_pod_ip(&mut report, vmi, ctx).await;
    }
    if let Some(p) = patch(vmi, &ctx.config.node_name, &report, Timestamp::now()) {
        let written = api
            .patch(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&p))
            .await
            .map_err(|source| NodeError::Api {
                what: "writing the status of",
                name: vmi.name_any(),
                source,
            })?;
        let new = p["status"]["phase"].as_str().unwrap_or_else(|| phase(vmi));
        if let Some(note) = events::phase_change(phase(vmi), new) {
            ctx.recorder.record(&written, &note).await;
        }
        if let Some(note) = io_error_event(vmi, &report) {
            ctx.recorder.record(&written, &note).await;
        }
    }
    Ok(if alive {
        Action::requeue(POLL)
    } else {
        Action::await_change()
    })
}

/// What `l`, the launcher of `vmi`, reports now, after doing what is due: in pods mode `start`
/// once it waits in its pod; `startStrategy: Paused` once the guest runs. A launcher this agent
/// cannot use or start is killed (the VMI fails).
async fn follow(
    l: &mut Launcher,
    vmi: &VirtualMachineInstance,
    ctx: &Context,
) -> Result<Report, NodeError> {
    let mut report = l.report().await;
    if let AgentMode::Pods { working_dir } = &ctx.mode
        && matches!(&report, Report::Status(s) if s.phase == Phase::Waiting)
        && !l.started()
    {
        // The claims' capacities, from which the launcher sizes a disk.img it must create.
        let vmi = &super::claim_info::with_claim_info(&ctx.client, vmi).await;
        report = match pod::start(l, vmi, &ctx.config, working_dir).await? {
            Some(why) => Report::StartFailed(why),
            None => l.report().await,
        };
    }
    // startStrategy: Paused — the guest is paused as soon as it runs.
    if let Report::Status(s) = &report
        && vmi.spec.start_strategy.as_deref() == Some("Paused")
        && l.pause_at_start(s).await
    {
        report = l.report().await;
    }
    if matches!(report, Report::Incompatible(_) | Report::StartFailed(_)) {
        // Failed is final: its launcher goes too.
        l.kill().await;
    }
    Ok(report)
}

/// Pods mode: the pod's IP on the masquerade interfaces of `report` (looked up once per VMI).
async fn show_pod_ip(report: &mut Report, vmi: &VirtualMachineInstance, ctx: &Context) {
    let Report::Status(s) = report else { return };
    if !s.guest.interfaces.iter().any(|i| i.binding == "masquerade") {
        return;
    }
    let uid = vmi.uid().unwrap_or_default();
    let known = ctx.pod_ips().get(&uid).cloned();
    let ip = match known {
        Some(ip) => Some(ip),
        None => {
            let ns = vmi.namespace().unwrap_or_default();
            let ip = pod::pod_ip(&ctx.client, &ns, &uid).await;
            if let Some(ip) = &ip {
                ctx.pod_ips().insert(uid, ip.clone());
            }
            ip
        }
    };
    if let Some(ip) = ip {
        pod::with_pod_ip(report, &ip);
    }
}

/// The launcher of `vmi`: this agent's, else one running in its run directory (left by an
/// earlier agent, or, in pods mode, the pod's), adopted now. An error means one runs there that
/// cannot be adopted yet: nothing may start another.
async fn find(vmi: &VirtualMachineInstance, ctx: &Context) -> Result<Option<Shared>, NodeError> {
    let uid = vmi.uid().unwrap_or_default();
    if let Some(l) = ctx.launcher(&uid) {
        return Ok(Some(l));
    }
    let dir = ctx.run_dir(vmi);
    let found = match ctx.mode {
        AgentMode::Direct => Launcher::find(&dir, Some(&uid)).await?,
        AgentMode::Pods { .. } => Launcher::attach(&dir, &uid).await?,
    };
    let Some(l) = found else {
        return Ok(None);
    };
    let l = Arc::new(tokio::sync::Mutex::new(l));
    ctx.map().insert(uid, l.clone());
    Ok(Some(l))
}

async fn cleanup(vmi: &VirtualMachineInstance, ctx: &Context) -> Result<Action, NodeError> {
    let uid = vmi.uid().unwrap_or_default();
    let launcher = find(vmi, ctx).await?;
    ctx.map().remove(&uid);
    ctx.pod_ips().remove(&uid);
    if let Some(l) = launcher {
        ctx.recorder.record(vmi, &events::shutting_down()).await;
        let mut l = l.lock().await;
        let grace = vmi
            .spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
        let grace = Duration::from_secs(grace.max(0) as u64);
        stop(&mut l, Some(grace), grace).await;
    }
    // Deleted mid-migration: the target's launcher and run directory go too.
    if let Some(id) = migration::migration_id(vmi) {
        migration::drop_target(ctx, &id, &uid).await;
    }
    let dir = ctx.run_dir(vmi);
    migration::forget_active(&ctx.config.run_root, &uid);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(NodeError::Io {
                what: "removing the run directory",
                path: dir,
                source,
            });
        }
    }
    // Pods mode's run directories sit in `active/`, which stays.
    if matches!(ctx.mode, AgentMode::Direct) {
        super::adopt::remove_empty_namespace_dir(&dir);
    }
    Ok(Action::await_change())
}

/// Shuts `l` down gracefully (`grace`: see [`Launcher::shutdown`]) and waits for it to exit,
/// killing it if it has not `wait + EXIT_SLACK` later.
pub(super) async fn stop(l: &mut Launcher, grace: Option<Duration>, wait: Duration) {
    l.shutdown(grace).await;
    let deadline = tokio::time::Instant::now() + wait + EXIT_SLACK;
    while !l.exited() {
        if tokio::time::Instant::now() >= deadline {
            l.kill().await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
