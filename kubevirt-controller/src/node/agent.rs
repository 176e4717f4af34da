//! The node agent's loop: every VMI placed on this node (or, on the local single-node plane,
//! not placed yet) gets a launcher; the launcher's state is written back on the VMI; deleting
//! the VMI shuts the guest down (ACPI power button, forced stop after the grace period) before
//! the VMI's finalizer is removed.
//!
//! The agent may die and restart (kill -9, an upgrade) while guests run: their launchers run on
//! (see [`super::launcher`]). A restarted agent adopts the launcher it finds live in a VMI's run
//! directory instead of starting another, so the VMI stays Running on the same guest; a dead run
//! directory's final status gives the VMI its outcome; launchers whose VMI is gone (or final)
//! are shut down gracefully and their run directories removed ([`super::adopt`]).

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
use super::launcher::Launcher;
use super::report::{Report, patch};
use super::{NodeConfig, NodeError};
use crate::vm::instance::{is_final, phase};
use kubevirt_launcher_protocol::{ExitStatus, FinalStatus};

/// The finalizer that keeps a VMI until its guest is down (upstream's name).
pub const FINALIZER: &str = "kubevirt.io/foregroundDeleteVirtualMachine";
/// How often a running launcher is asked for its state.
const POLL: Duration = Duration::from_millis(500);
/// Beyond the grace period, how long a launcher may take to exit before it is killed.
const EXIT_SLACK: Duration = Duration::from_secs(10);

/// One launcher, borrowed by one sync at a time (its own), across its control requests.
type Shared = Arc<tokio::sync::Mutex<Launcher>>;

struct Context {
    client: Client,
    config: NodeConfig,
    /// The launchers by VMI uid. The map is locked only to look up, add or remove an entry,
    /// never across I/O: a launcher that does not answer delays its own VMI only.
    launchers: Mutex<HashMap<String, Shared>>,
}

impl Context {
    fn launcher(&self, uid: &str) -> Option<Shared> {
        self.map().get(uid).cloned()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shared>> {
        self.launchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs the node agent until `shutdown` resolves; launchers still running then are stopped.
pub async fn run(
    client: Client,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let vmis: Api<VirtualMachineInstance> = Api::all(client.clone());
    // The run directories left by an earlier agent, taken before this one starts any.
    let earlier = adopt::run_dirs(&config.run_root);
    tokio::spawn(adopt::stop_orphans(
        vmis.clone(),
        config.node_name.clone(),
        earlier,
    ));
    let ctx = Arc::new(Context {
        client,
        config,
        launchers: Mutex::new(HashMap::new()),
    });
    Controller::new(vmis, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| {
            if let Some(line) = crate::runtime::describe(r) {
                on_sync(line);
            }
            futures::future::ready(())
        })
        .await;
    let launchers: Vec<Shared> = ctx.map().drain().map(|(_, l)| l).collect();
    for l in launchers {
        l.lock().await.kill().await;
    }
}

fn error_policy(_vmi: Arc<VirtualMachineInstance>, _e: &NodeError, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

/// Whether this agent runs `vmi`.
fn mine(vmi: &VirtualMachineInstance, config: &NodeConfig) -> bool {
    match vmi.status.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(node) => node == config.node_name,
        None => config.claim_unscheduled && matches!(phase(vmi), "" | "Pending"),
    }
}

async fn reconcile(
    vmi: Arc<VirtualMachineInstance>,
    ctx: Arc<Context>,
) -> Result<Action, NodeError> {
    if !mine(&vmi, &ctx.config) && !vmi.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = vmi.namespace().unwrap_or_default();
    let api: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, vmi, |event| async {
        match event {
            Event::Apply(vmi) => apply(&vmi, &api, &ctx).await,
            Event::Cleanup(vmi) => cleanup(&vmi, &ctx).await,
        }
    })
    .await
    .map_err(|e| NodeError::Reconcile(Box::new(e)))
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
    // stopped by `adopt::stop_orphans`.
    let found = match ctx.launcher(&uid) {
        None if is_final(vmi) => None,
        _ => find(vmi, ctx).await?,
    };
    let report = match found {
        Some(l) => {
            let mut l = l.lock().await;
            let mut report = l.report().await;
            // startStrategy: Paused — the guest is paused as soon as it runs.
            if let Report::Status(s) = &report
                && vmi.spec.start_strategy.as_deref() == Some("Paused")
                && l.pause_at_start(s).await
            {
                report = l.report().await;
            }
            if matches!(report, Report::Incompatible(_)) {
                // Failed is final: its launcher goes too.
                l.kill().await;
            }
            report
        }
        None if is_final(vmi) => return Ok(Action::await_change()),
        None if matches!(phase(vmi), "" | "Pending") => {
            let l = Launcher::spawn(&ctx.config, vmi, run_dir(vmi, &ctx.config)).await?;
            ctx.map()
                .insert(uid.clone(), Arc::new(tokio::sync::Mutex::new(l)));
            Report::Launching
        }
        // Its launcher is gone: the final status it left says how it ended.
        None => match FinalStatus::read(&run_dir(vmi, &ctx.config)) {
            Ok(Some(last)) => Report::Exited {
                code: None,
                last: Some(last),
            },
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
    let alive = matches!(report, Report::Launching | Report::Status(_));
    if !alive {
        ctx.map().remove(&uid);
    }
    if let Some(p) = patch(vmi, &ctx.config.node_name, &report, Timestamp::now()) {
        api.patch(&vmi.name_any(), &PatchParams::default(), &Patch::Merge(&p))
            .await
            .map_err(|source| NodeError::Api {
                what: "writing the status of",
                name: vmi.name_any(),
                source,
            })?;
    }
    Ok(if alive {
        Action::requeue(POLL)
    } else {
        Action::await_change()
    })
}

/// The launcher of `vmi`: this agent's, else one an earlier agent left running in its run
/// directory, adopted now. An error means one runs there that cannot be adopted yet: nothing
/// may start another.
async fn find(vmi: &VirtualMachineInstance, ctx: &Context) -> Result<Option<Shared>, NodeError> {
    let uid = vmi.uid().unwrap_or_default();
    if let Some(l) = ctx.launcher(&uid) {
        return Ok(Some(l));
    }
    let Some(l) = Launcher::find(&run_dir(vmi, &ctx.config), Some(&uid)).await? else {
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
    if let Some(l) = launcher {
        let mut l = l.lock().await;
        let grace = vmi
            .spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
        let grace = Duration::from_secs(grace.max(0) as u64);
        stop(&mut l, Some(grace), grace).await;
    }
    let dir = run_dir(vmi, &ctx.config);
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
