//! Live migration, the node agents' part (upstream's virt-handler as migration source and
//! target), in pods mode. The VMI's `status.migrationState`, written by the migration
//! controller ([`crate::migration`]), says who does what:
//!
//! - **Target** (`targetNode` is this node): the target pod's launcher (`serve --incoming`,
//!   run directory `<launcher-root>/<migration uid>`) is attached, its pod network prepared and
//!   `start` sent as for any VMI ([`super::pod::start`]); once it listens on
//!   [`crate::migration::INCOMING_SOCKET`] the agent writes `targetNodeAddress`. The agent's
//!   endpoint carries a source agent's stream to that socket
//!   ([`super::endpoint::AgentOp::MigrationTarget`]).
//! - **Source** (`sourceNode`; the VMI's launcher runs here): once the target is ready the
//!   agent offers the source launcher [`crate::migration::OUTGOING_SOCKET`] in its run
//!   directory, relays what arrives there to the target node's agent, sends the launcher
//!   `migrate`, writes `startTimestamp`, and then `completed` or `failed` from the launcher's
//!   migration status.
//! - **After**: the target's agent takes the VMI over once its launcher runs the guest: the
//!   VMI's run directory on the node becomes the target's (a pointer file
//!   `<launcher-root>/active/<vmi uid>` that the endpoint reads too), `targetNodeDomainDetected`
//!   is written and its reports put the VMI's `nodeName` on the target's node. The source's
//!   launcher exits (`Migrated`) and is not reported; its run directory goes.
//!
//! A failed migration (`failed`) stops the target's launcher and removes its run directory;
//! the source's launcher resumed the guest by itself. An abort (`abortRequested`, its VMIM
//! deleted) is the source's: it sends its launcher `cancelMigration` and writes `abortStatus`
//! (Aborting, then Succeeded when the migration failed, Failed when it completed first).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kubevirt_api::core::v1::{VirtualMachineInstance, VirtualMachineInstanceMigrationState};
use kubevirt_launcher_protocol::{Client, MigrateRequest, MigrationStatus, Phase, Request};
use serde_json::{Value, json};
use tokio::net::UnixListener;

use super::NodeError;
use super::endpoint::AgentOp;
use super::launcher::Launcher;
use super::report::Report;
use crate::migration::{INCOMING_SOCKET, OUTGOING_SOCKET};
use crate::vmi::render::RUN_DIR_IN_POD;

/// `abortStatus` while the source's launcher cancels (upstream's `MigrationAbortInProgress`).
const ABORT_IN_PROGRESS: &str = "Aborting";
/// `abortStatus` of a migration that was cancelled: the guest runs on in the source.
const ABORT_SUCCEEDED: &str = "Succeeded";
/// `abortStatus` of a migration that completed before it could be cancelled.
const ABORT_FAILED: &str = "Failed";
/// The directory of pointer files below the launcher root.
pub(super) const ACTIVE_DIR: &str = "active";
/// How long the source's relay waits for its launcher to connect.
const RELAY_ACCEPT: Duration = Duration::from_secs(60);

/// The run directory of the launcher that runs the guest of VMI `uid` on this node: its pod's
/// (`<root>/<uid>`), or the target's of the migration that moved it here.
pub fn active_run_dir(root: &Path, uid: &str) -> PathBuf {
    let pointer = root.join(ACTIVE_DIR).join(uid);
    match std::fs::read_to_string(&pointer) {
        Ok(key) if plain(key.trim()) => root.join(key.trim()),
        _ => root.join(uid),
    }
}

/// Makes `<root>/<key>` the run directory of VMI `uid` on this node (atomically).
fn set_active(root: &Path, uid: &str, key: &str) -> Result<(), NodeError> {
    let dir = root.join(ACTIVE_DIR);
    let io = |what: &'static str, path: PathBuf| move |source| NodeError::Io { what, path, source };
    std::fs::create_dir_all(&dir).map_err(io("creating", dir.clone()))?;
    let tmp = dir.join(format!(".{uid}.tmp"));
    std::fs::write(&tmp, key).map_err(io("writing", tmp.clone()))?;
    std::fs::rename(&tmp, dir.join(uid)).map_err(io("renaming", tmp))
}

/// Forgets where VMI `uid` runs (it is gone from this node).
pub fn forget_active(root: &Path, uid: &str) {
    let _ = std::fs::remove_file(root.join(ACTIVE_DIR).join(uid));
}

/// A VMI uid or migration uid usable as one path component below the launcher root (its run
/// directory): the one check the target pod's render, the agents and the endpoint share.
pub fn plain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The uid of `vmi`'s migration, if it has one usable as a run directory's name.
pub fn migration_id(vmi: &VirtualMachineInstance) -> Option<String> {
    state(vmi)?.migration_uid.clone().filter(|id| plain(id))
}

/// Stops migration `id`'s target launcher on this agent, if it has one, and removes its run
/// directory unless the guest of VMI `uid` runs there now: after a failed migration, and for
/// a VMI deleted mid-migration.
pub(super) async fn drop_target(ctx: &super::agent::Context, id: &str, uid: &str) {
    if let Some(l) = ctx.take_target(id) {
        l.lock().await.kill().await;
    }
    let root = &ctx.config.run_root;
    let dir = root.join(id);
    if active_run_dir(root, uid) != dir {
        release(&dir);
    }
}

/// The VMI's migration state, if it has one.
pub fn state(vmi: &VirtualMachineInstance) -> Option<&VirtualMachineInstanceMigrationState> {
    vmi.status.as_ref()?.migration_state.as_ref()
}

fn ended(m: &VirtualMachineInstanceMigrationState) -> bool {
    m.completed == Some(true) || m.failed == Some(true)
}

fn succeeded(m: &VirtualMachineInstanceMigrationState) -> bool {
    m.completed == Some(true) && m.failed != Some(true)
}

/// The VMI's guest was moved to `node` by its last migration.
pub fn moved_to(vmi: &VirtualMachineInstance, node: &str) -> bool {
    state(vmi).is_some_and(|m| succeeded(m) && m.target_node.as_deref() == Some(node))
}

/// The VMI's guest was moved from `node` to another node by its last migration.
pub fn moved_away(vmi: &VirtualMachineInstance, node: &str) -> bool {
    state(vmi).is_some_and(|m| {
        succeeded(m)
            && m.source_node.as_deref() == Some(node)
            && m.target_node.as_deref() != Some(node)
    })
}

/// Merge-patches the VMI's `status.migrationState` with `fields`.
async fn patch_state(
    api: &Api<VirtualMachineInstance>,
    vmi: &VirtualMachineInstance,
    fields: Value,
) -> Result<(), NodeError> {
    let patch = json!({"status": {"migrationState": fields}});
    api.patch(
        &vmi.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| NodeError::Api {
        what: "writing the migration state of",
        name: vmi.name_any(),
        source,
    })
}

fn now() -> String {
    Timestamp::now().to_string()
}

/// What the target side asks of the agent's loop.
pub(super) enum TargetStep {
    /// Nothing to do as a target.
    None,
    /// Sync again soon (the target is being prepared).
    Poll,
    /// The target's launcher now runs the guest: follow it as the VMI's.
    TookOver(Box<Launcher>),
}

/// The target node's part for `vmi`. `targets` holds this agent's target launchers by
/// migration uid.
pub(super) async fn target(
    vmi: &VirtualMachineInstance,
    api: &Api<VirtualMachineInstance>,
    ctx: &super::agent::Context,
    working_dir: &Path,
) -> Result<TargetStep, NodeError> {
    let me = &ctx.config.node_name;
    let Some(m) = state(vmi).filter(|m| m.target_node.as_deref() == Some(me.as_str())) else {
        return Ok(TargetStep::None);
    };
    let Some(id) = migration_id(vmi) else {
        return Ok(TargetStep::None);
    };
    let uid = vmi.uid().unwrap_or_default();
    let root = &ctx.config.run_root;
    let dir = root.join(&id);
    if m.failed == Some(true) {
        // The source resumed the guest: the target's launcher and files go.
        drop_target(ctx, &id, &uid).await;
        return Ok(TargetStep::None);
    }
    if active_run_dir(root, &uid) == dir {
        return Ok(TargetStep::None);
    }
    let l = match ctx.target(&id) {
        Some(l) => l,
        None => {
            // A non-root target launcher waits for its run directory to be its own.
            super::owner::prepare_run_dir(&dir)?;
            match Launcher::attach(&dir, &uid).await? {
                Some(l) => ctx.add_target(&id, l),
                None => return Ok(TargetStep::Poll),
            }
        }
    };
    let mut guard = l.lock().await;
    let report = guard.report().await;
    if m.completed == Some(true) {
        // Handed over: the guest runs here once the launcher says so.
        let runs = matches!(&report, Report::Status(s) if s.phase == Phase::Running);
        if !runs {
            return Ok(TargetStep::Poll);
        }
        let previous = active_run_dir(root, &uid);
        set_active(root, &uid, &id)?;
        // The source's directory (on this node) is done with: its launcher handed over.
        if previous != dir && state(vmi).is_some_and(|m| m.source_node.as_deref() == Some(me)) {
            release(&previous);
        }
        patch_state(
            api,
            vmi,
            json!({"targetNodeDomainDetected": true, "targetNodeDomainReadyTimestamp": now()}),
        )
        .await?;
        ctx.recorder.record(vmi, &super::events::migrated(me)).await;
        drop(guard);
        drop(l);
        let Some(l) = ctx.take_target(&id) else {
            return Ok(TargetStep::Poll);
        };
        let l = std::sync::Arc::try_unwrap(l)
            .map_err(|_| NodeError::LauncherBusy {
                run_dir: dir.clone(),
                why: "the target launcher is still in use".into(),
            })?
            .into_inner();
        return Ok(TargetStep::TookOver(Box::new(l)));
    }
    if matches!(&report, Report::Status(s) if s.phase == Phase::Waiting)
        && !guard.started()
        && let Some(why) = super::pod::start(&mut guard, vmi, &ctx.config, working_dir).await?
    {
        let why = format!("the target could not be started: {why}");
        patch_state(api, vmi, failed(why)).await?;
        return Ok(TargetStep::Poll);
    }
    if let Report::Exited { last, .. } = &report {
        let why = last
            .as_ref()
            .and_then(|l| l.reason.clone())
            .unwrap_or_else(|| "it exited".into());
        let why = format!("the target launcher ended: {why}");
        patch_state(api, vmi, failed(why)).await?;
        return Ok(TargetStep::Poll);
    }
    if m.target_node_address.is_none() && dir.join(INCOMING_SOCKET).exists() {
        let address = match &ctx.config.peers {
            Some(peers) => peers.address_of(&ctx.client, me).await.ok(),
            None => None,
        };
        let address = address.map_or_else(|| me.clone(), |a| a.to_string());
        patch_state(api, vmi, json!({"targetNodeAddress": address})).await?;
    }
    Ok(TargetStep::Poll)
}

/// The source node's part for `vmi`, whose launcher `l` runs here. `Some(action)`: the launcher
/// handed the guest over (the caller follows it no more and reports nothing for it).
pub(super) async fn source(
    vmi: &VirtualMachineInstance,
    l: &mut Launcher,
    api: &Api<VirtualMachineInstance>,
    ctx: &super::agent::Context,
) -> Result<Option<Report>, NodeError> {
    let me = &ctx.config.node_name;
    let report = l.report().await;
    // A launcher that handed its guest over and exited is done: nothing of it goes on the
    // VMI, its run directory may go. One still finishing is left to `apply`, which writes
    // nothing of it either, until it exits.
    let handed_over = matches!(report, Report::Exited { .. }) && report.handed_over();
    let Some(m) = state(vmi).filter(|m| m.source_node.as_deref() == Some(me.as_str())) else {
        return Ok(handed_over.then_some(report));
    };
    let Some(id) = m.migration_uid.clone().filter(|id| plain(id)) else {
        return Ok(handed_over.then_some(report));
    };
    if ended(m) {
        return Ok(handed_over.then_some(report));
    }
    let aborting = m.abort_requested == Some(true);
    if handed_over {
        let mut fields = json!({"completed": true, "endTimestamp": now()});
        if aborting {
            // Too late: the guest runs on the target (upstream's abortStatus Failed).
            fields["abortStatus"] = json!(ABORT_FAILED);
        }
        patch_state(api, vmi, fields).await?;
        return Ok(Some(report));
    }
    let progress = match &report {
        Report::Status(s) => this_migration(m, ctx.outgoing_started(&id), s.migration.clone()),
        _ => None,
    };
    if let Some(p) = progress.as_ref().filter(|p| p.is_done()) {
        let mut fields = outcome(p);
        if aborting {
            let aborted = fields["failed"] == json!(true);
            fields["abortStatus"] = json!(if aborted {
                ABORT_SUCCEEDED
            } else {
                ABORT_FAILED
            });
        }
        if let Some(why) = fields["failureReason"].as_str() {
            let note = super::events::migration_failed(&id, why);
            ctx.recorder.record(vmi, &note).await;
        }
        patch_state(api, vmi, fields).await?;
        return Ok(None);
    }
    if aborting {
        return abort(
            vmi,
            l,
            api,
            ctx,
            m,
            progress.is_some() || ctx.outgoing_started(&id),
        )
        .await;
    }
    let Some(target_node) = m.target_node.clone() else {
        return Ok(None);
    };
    if m.target_node_address.is_none() || progress.is_some() || ctx.outgoing_started(&id) {
        return Ok(None);
    }
    if m.start_timestamp.is_some() {
        // Started by an agent before this one, and its launcher knows of no migration.
        let why = "the node agent restarted before the migration started";
        patch_state(api, vmi, failed(why)).await?;
        return Ok(None);
    }
    let Some(peers) = ctx.config.peers.clone() else {
        let why = "this node agent knows no way to reach other node agents (no endpoint)";
        patch_state(api, vmi, failed(why)).await?;
        return Ok(None);
    };
    let socket = l.run_dir().join(OUTGOING_SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|source| NodeError::Io {
        what: "listening for the migration on",
        path: socket.clone(),
        source,
    })?;
    // The source launcher connects to it: a non-root one needs it to be its own.
    if let Some(pid) = l.pid() {
        let (uid, gid) = super::owner::launcher_ids(pid)?;
        std::os::unix::fs::lchown(&socket, Some(uid), Some(gid)).map_err(|source| {
            NodeError::Io {
                what: "giving to the launcher",
                path: socket.clone(),
                source,
            }
        })?;
    }
    ctx.mark_outgoing(&id);
    let ids = (
        vmi.namespace().unwrap_or_default(),
        vmi.name_any(),
        vmi.uid().unwrap_or_default(),
    );
    tokio::spawn(relay(
        listener,
        socket,
        peers,
        ctx.client.clone(),
        target_node,
        id,
        ids,
    ));
    let request = request(m);
    match l.migrate(request).await {
        Ok(()) => {
            patch_state(
                api,
                vmi,
                json!({"startTimestamp": now(), "mode": "PreCopy"}),
            )
            .await?;
            ctx.recorder.record(vmi, &super::events::migrating()).await;
        }
        Err(e) => {
            let why = format!("the source launcher refused to migrate: {e}");
            patch_state(api, vmi, failed(why)).await?;
        }
    }
    Ok(None)
}

/// The source launcher's migration status, if it is migration `m`'s: once `m` was started, by
/// this agent (`started_here`) or one before it (`startTimestamp`). Until then the launcher
/// reports the last migration it did, whose end is not this one's: taken for it, a source that
/// failed one migration failed every later one at once with the same reason (a launcher's
/// `migration stream write: Broken pipe` after virt-handler was killed mid-stream, and every
/// migration of that VM after it), and one that had ended kept the next from starting.
fn this_migration(
    m: &VirtualMachineInstanceMigrationState,
    started_here: bool,
    status: Option<MigrationStatus>,
) -> Option<MigrationStatus> {
    status.filter(|_| started_here || m.start_timestamp.is_some())
}

/// The source's part of a migration the controller was asked to abort (its VMIM deleted):
/// one under way (`started`) is cancelled in the launcher (once: `abortStatus` Aborting),
/// and its end settles `abortStatus`; one not started yet is never started and ends here.
async fn abort(
    vmi: &VirtualMachineInstance,
    l: &Launcher,
    api: &Api<VirtualMachineInstance>,
    ctx: &super::agent::Context,
    m: &VirtualMachineInstanceMigrationState,
    started: bool,
) -> Result<Option<Report>, NodeError> {
    if !started {
        let mut fields = failed("the migration was cancelled before it started");
        fields["abortStatus"] = json!(ABORT_SUCCEEDED);
        patch_state(api, vmi, fields).await?;
        return Ok(None);
    }
    if m.abort_status.is_some() {
        return Ok(None);
    }
    let client = Client::for_run_dir(l.run_dir());
    let answer = tokio::task::spawn_blocking(move || client.act(&Request::CancelMigration)).await;
    match answer {
        Ok(Ok(())) => {
            patch_state(api, vmi, json!({"abortStatus": ABORT_IN_PROGRESS})).await?;
            let note = super::events::aborting_migration();
            ctx.recorder.record(vmi, &note).await;
        }
        // It ended meanwhile (completed or failed): its status settles the abort next.
        Ok(Err(e)) => {
            tracing::info!(vmi = %vmi.name_any(), error = %e, "the launcher did not cancel its migration");
        }
        Err(e) => {
            tracing::warn!(vmi = %vmi.name_any(), error = %e, "asking the launcher to cancel its migration");
        }
    }
    Ok(None)
}

/// The `migrate` request for migration `m`: through the agent's relay socket, with the
/// bandwidth and completion timeout of the cluster's `migrations` configuration the controller
/// copied into `migrationConfiguration` (upstream's `bandwidthPerMigration`,
/// `completionTimeoutPerGiB`).
fn request(m: &VirtualMachineInstanceMigrationState) -> MigrateRequest {
    let mut request = MigrateRequest::new(format!("unix:{RUN_DIR_IN_POD}/{OUTGOING_SOCKET}"));
    let Some(config) = m.migration_configuration.as_ref() else {
        return request;
    };
    request.bandwidth_mib_per_sec = config
        .bandwidth_per_migration
        .as_ref()
        .and_then(|q| kubevirt_api::quantity::bytes_of(q).ok())
        .filter(|b| *b > 0)
        .map(|b| b.div_ceil(1 << 20));
    request.completion_timeout_per_gib = config
        .completion_timeout_per_gi_b
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0);
    request
}

/// The migration state fields of a migration the source launcher ended.
fn outcome(p: &MigrationStatus) -> Value {
    if p.phase == "Completed" {
        return json!({"completed": true, "endTimestamp": now()});
    }
    let why = p
        .error
        .clone()
        .unwrap_or_else(|| "the source launcher failed the migration".into());
    failed(&why)
}

/// The migration state fields of a migration that failed for `why`.
fn failed(why: impl AsRef<str>) -> Value {
    let why = why.as_ref();
    json!({"failed": true, "completed": true, "failureReason": why, "endTimestamp": now()})
}

/// Carries the source launcher's one connection on `listener` to the target node's agent.
async fn relay(
    listener: UnixListener,
    socket: PathBuf,
    peers: crate::api::agents::NodeAgents,
    client: kube::Client,
    node: String,
    migration: String,
    (namespace, name, uid): (String, String, String),
) {
    let accepted = tokio::time::timeout(RELAY_ACCEPT, listener.accept()).await;
    let _ = std::fs::remove_file(&socket);
    let Ok(Ok((conn, _))) = accepted else {
        return;
    };
    let op = AgentOp::MigrationTarget { migration };
    match peers
        .call(&client, &node, op, (&namespace, &name, &uid))
        .await
    {
        Ok(remote) => super::splice::splice(conn, remote).await,
        Err(e) => {
            // The source sees the stream end, fails the migration and runs on.
            tracing::warn!(vmi = %format!("{namespace}/{name}"), error = %e.message, "the migration's target node agent cannot be reached");
        }
    }
}

/// Removes the run directory the guest left on this node after it moved (its launcher exited).
pub(super) fn release(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pointer_names_the_run_directory_after_a_migration() {
        let root = std::env::temp_dir().join(format!("kv-active-{}", std::process::id()));
        let uid = "0f3c9a2e-1b7d";
        assert_eq!(active_run_dir(&root, uid), root.join(uid));
        set_active(&root, uid, "mig-7").expect("pointer");
        assert_eq!(active_run_dir(&root, uid), root.join("mig-7"));
        // A pointer that would leave the root is not followed.
        std::fs::write(root.join(ACTIVE_DIR).join(uid), "../etc").expect("write");
        assert_eq!(active_run_dir(&root, uid), root.join(uid));
        forget_active(&root, uid);
        assert_eq!(active_run_dir(&root, uid), root.join(uid));
        std::fs::remove_dir_all(&root).expect("clean");
    }

    #[test]
    fn the_launcher_is_asked_for_the_clusters_bandwidth_and_timeout() {
        let state = |config: Value| -> VirtualMachineInstanceMigrationState {
            serde_json::from_value(json!({"migrationUid": "m", "migrationConfiguration": config}))
                .expect("state")
        };
        let plain = request(&state(Value::Null));
        assert_eq!(
            (
                plain.bandwidth_mib_per_sec,
                plain.completion_timeout_per_gib
            ),
            (None, None)
        );
        assert!(plain.target.ends_with("/outgoing.sock"), "{}", plain.target);
        for (quantity, mib) in [
            ("1Mi", Some(1)),
            ("64Mi", Some(64)),
            ("1500Ki", Some(2)),
            ("0", None),
        ] {
            let r = request(&state(json!({"bandwidthPerMigration": quantity})));
            assert_eq!(r.bandwidth_mib_per_sec, mib, "{quantity}");
        }
        let r = request(&state(json!({"completionTimeoutPerGiB": 800})));
        assert_eq!(r.completion_timeout_per_gib, Some(800));
    }

    #[test]
    fn the_launchers_last_migration_is_not_the_next_ones_outcome() {
        let last: MigrationStatus = serde_json::from_value(json!({
            "phase": "Failed", "target": "unix:/var/run/kubevirt-rs/vmi/outgoing.sock",
            "rounds": 1, "bytesSent": 0, "memoryTotal": 0, "elapsedMs": 9,
            "error": "migration stream write: Broken pipe (os error 32)"
        }))
        .expect("status");
        assert!(last.is_done());
        let next: VirtualMachineInstanceMigrationState = serde_json::from_value(json!({
            "migrationUid": "m2", "sourceNode": "n", "targetNode": "n",
            "targetNodeAddress": "10.0.0.1:8186"
        }))
        .expect("state");
        // A new migration nobody has started: the launcher's failure is the last one's.
        assert_eq!(this_migration(&next, false, Some(last.clone())), None);
        // Started here, or by an agent before this one: the status is its own.
        assert!(this_migration(&next, true, Some(last.clone())).is_some());
        let mut started = next.clone();
        started.start_timestamp =
            Some(serde_json::from_value(json!("2026-12-06T17:44:54Z")).expect("time"));
        assert!(this_migration(&started, false, Some(last)).is_some());
        assert_eq!(this_migration(&started, false, None), None);
    }

    #[test]
    fn who_the_guest_moved_to_and_from() {
        let vmi: VirtualMachineInstance = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v"}, "spec": {"domain": {"devices": {}}},
            "status": {"migrationState": {"sourceNode": "a", "targetNode": "b",
                       "completed": true, "failed": false}}
        }))
        .expect("vmi");
        assert!(moved_to(&vmi, "b") && !moved_to(&vmi, "a"));
        assert!(moved_away(&vmi, "a") && !moved_away(&vmi, "b"));
    }
}
