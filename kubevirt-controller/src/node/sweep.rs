//! The node agent's orphan sweep in pods mode (upstream virt-handler's orphan clean-up): every
//! [`SWEEP_EVERY`] (the first once the agent's VMI informer has listed, by then the launchers
//! that outlived an earlier agent are adopted), what below the launcher root belongs to nothing
//! any more is removed — a run directory `<root>/<key>` whose key names no VMI of this node, no
//! migration to this node, no virt-launcher pod and no live launcher, and a pointer `<root>/active/<uid>` of a VMI
//! that is gone. Such directories are left when the kubelet starts a virt-launcher pod after
//! its VMI's clean-up ran (or for a VMI the agent never took): its `launcher` hostPath volume is
//! `DirectoryOrCreate`.
//!
//! Never removed: a directory whose launcher lives (one this agent follows, or one holding its
//! lifetime lock, [`kubevirt_launcher_protocol::LAUNCHER_LOCK`]), nor one younger than
//! [`GRACE`] (its age is that of its last change: creation, a file added, its owner given).
//!
//! The race with the VMI informer: the kubelet makes a directory only when it starts the pod
//! (a VMI's, or a migration's target, whose VMI may not name that migration yet), and the pod
//! is stored in the API server before that, its VMI before the pod. The informer may lag behind
//! (a watch that restarts, an agent that just started), so it only picks the candidates; a
//! candidate is removed only when a list of VMIs and virt-launcher pods *begun after the
//! directory was seen* — consistent reads, not the watch cache — names nothing it belongs to.
//! A pod or VMI that still exists is in that list, so a pod being started for a VMI the
//! informer has not shown yet keeps its directory. The grace period is the margin on top of
//! that. (Pods, not VirtualMachineInstanceMigrations: virt-handler may list pods, as upstream's,
//! and a migration's target pod names its key in `kubevirt.io/migrationJobUID`.)

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store;
use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_launcher_protocol::{Lifetime, lifetime};

use super::agent::Context;
use super::migration::{ACTIVE_DIR, state};
use crate::migration::MIGRATION_JOB_LABEL;
use crate::vmi::{APP_LABEL, APP_LAUNCHER, CREATED_BY_LABEL};

/// How often the launcher root is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How old (since its last change) an entry must be before it may be swept.
pub const GRACE: Duration = Duration::from_secs(30);

/// One entry below the launcher root: a run directory `<root>/<key>`, or a pointer
/// `<root>/active/<key>` (`key` is then a VMI uid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name: a VMI uid or a migration uid.
    pub key: String,
    /// How long since it last changed.
    pub age: Duration,
}

/// The entries of `entries` to remove: older than `grace`, named by no key in `wanted` (a VMI
/// or migration this node still has) and none in `live` (a launcher runs there).
pub fn orphans<'a>(
    entries: &'a [Entry],
    wanted: &HashSet<String>,
    live: &HashSet<String>,
    grace: Duration,
) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.age >= grace && !wanted.contains(&e.key) && !live.contains(&e.key))
        .collect()
}

/// The keys below the launcher root that `vmis` and `pods` (virt-launcher pods) still need on
/// `node`: those of every VMI not placed elsewhere (not placed yet, on this node, or migrating
/// to it) — its uid, its migration's uid and the run directory `active` points it to — and
/// those of the pods not bound to another node (a migration's target pod: its migration's uid;
/// any other: its VMI's).
pub fn wanted(
    vmis: &[VirtualMachineInstance],
    pods: &[Pod],
    node: &str,
    active: &HashMap<String, String>,
) -> HashSet<String> {
    let mut keys = HashSet::new();
    for vmi in vmis {
        let placed = vmi.status.as_ref().and_then(|s| s.node_name.as_deref());
        let target = state(vmi).and_then(|m| m.target_node.as_deref());
        if placed.is_some_and(|n| n != node) && target != Some(node) {
            continue;
        }
        let uid = vmi.uid().unwrap_or_default();
        keys.extend(state(vmi).and_then(|m| m.migration_uid.clone()));
        keys.extend(active.get(&uid).cloned());
        keys.insert(uid);
    }
    for pod in pods {
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if bound.is_some_and(|n| n != node) {
            continue;
        }
        let labels = pod.metadata.labels.as_ref();
        let key = labels.and_then(|l| l.get(MIGRATION_JOB_LABEL).or(l.get(CREATED_BY_LABEL)));
        keys.extend(key.cloned());
    }
    keys
}

/// Whether `name` is shaped as the API server's uids are (`8-4-4-4-12` hex digits): the only
/// names looked at below the launcher root, so a root set where other things live (or the
/// agent's own `active` and dot names) loses nothing else.
fn uid_shaped(name: &str) -> bool {
    name.len() == 36
        && name.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// What is below the launcher root now: its run directories, its pointers (with the run
/// directory each names); only uid-shaped names are looked at.
fn scan(root: &Path) -> (Vec<Entry>, Vec<Entry>, HashMap<String, String>) {
    let entries = |dir: &Path| -> Vec<(String, std::fs::Metadata)> {
        let Ok(read) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        read.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let meta = e.metadata().ok()?;
                uid_shaped(&name).then_some((name, meta))
            })
            .collect()
    };
    let now = SystemTime::now();
    let age = |meta: &std::fs::Metadata| {
        // The later of its last modification and its last status change (an owner given).
        let changed = meta.mtime().max(meta.ctime());
        let changed = SystemTime::UNIX_EPOCH + Duration::from_secs(changed.max(0) as u64);
        now.duration_since(changed).unwrap_or_default()
    };
    let dirs = entries(root)
        .into_iter()
        .filter(|(_, m)| m.is_dir())
        .map(|(key, m)| Entry { age: age(&m), key })
        .collect();
    let mut active = HashMap::new();
    let mut pointers = Vec::new();
    for (uid, meta) in entries(&root.join(ACTIVE_DIR)) {
        if let Ok(key) = std::fs::read_to_string(root.join(ACTIVE_DIR).join(&uid)) {
            active.insert(uid.clone(), key.trim().to_string());
        }
        pointers.push(Entry {
            age: age(&meta),
            key: uid,
        });
    }
    (dirs, pointers, active)
}

/// Whether a launcher holds the lifetime lock of `dir` (one that cannot be probed counts as
/// live: it is kept).
fn locked(dir: &Path) -> bool {
    !matches!(lifetime(dir), Ok(Lifetime::Absent | Lifetime::Ended))
}

/// The keys of the launchers that live: those `ctx` follows (the run directories its VMIs'
/// pointers name included) and those holding their lock among `dirs`.
fn live(
    ctx: &Context,
    root: &Path,
    dirs: &[Entry],
    active: &HashMap<String, String>,
) -> HashSet<String> {
    let mut keys = ctx.followed();
    keys.extend(
        keys.iter()
            .filter_map(|k| active.get(k).cloned())
            .collect::<Vec<_>>(),
    );
    keys.extend(
        dirs.iter()
            .filter(|d| locked(&root.join(&d.key)))
            .map(|d| d.key.clone()),
    );
    keys
}

/// A consistent list of the VMIs and the virt-launcher pods (no resourceVersion: not the watch
/// cache); `None` (said in the log) when either cannot be listed.
async fn list_now(ctx: &Context) -> Option<(Vec<VirtualMachineInstance>, Vec<Pod>)> {
    let vmis: Api<VirtualMachineInstance> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let launchers = ListParams::default().labels(&format!("{APP_LABEL}={APP_LAUNCHER}"));
    let listed = async {
        let vmis = vmis.list(&ListParams::default()).await?.items;
        let pods = pods.list(&launchers).await?.items;
        Ok::<_, kube::Error>((vmis, pods))
    };
    match listed.await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the VMIs and launcher pods: no run directory is swept");
            None
        }
    }
}

/// One sweep of the launcher root; returns the paths it removed.
pub(super) async fn sweep_once(
    ctx: &Context,
    store: &Store<VirtualMachineInstance>,
) -> Vec<PathBuf> {
    let root = ctx.config.run_root.clone();
    let node = ctx.config.node_name.as_str();
    let (dirs, pointers, active) = scan(&root);
    let scanned = dirs.len();
    // Candidates by what the informer shows (no API request while every entry is accounted for).
    let cached: Vec<VirtualMachineInstance> = store.state().iter().map(|v| (**v).clone()).collect();
    let guess = wanted(&cached, &[], node, &active);
    let live_now = live(ctx, &root, &dirs, &active);
    let dirs: Vec<Entry> = orphans(&dirs, &guess, &live_now, GRACE)
        .into_iter()
        .cloned()
        .collect();
    let pointers: Vec<Entry> = orphans(&pointers, &guess, &HashSet::new(), GRACE)
        .into_iter()
        .cloned()
        .collect();
    tracing::debug!(scanned = ?scanned, candidates = ?dirs, pointers = ?pointers, "launcher root swept");
    if dirs.is_empty() && pointers.is_empty() {
        return Vec::new();
    }
    // The list begins after the scan: it names every object a scanned entry belongs to that
    // still exists.
    let Some((vmis, pods)) = list_now(ctx).await else {
        return Vec::new();
    };
    let wanted = wanted(&vmis, &pods, node, &active);
    // Asked again: a launcher may have taken its directory since.
    let live_now = live(ctx, &root, &dirs, &active);
    let mut removed = Vec::new();
    for d in orphans(&dirs, &wanted, &live_now, GRACE) {
        let path = root.join(&d.key);
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    for p in orphans(&pointers, &wanted, &HashSet::new(), GRACE) {
        let path = root.join(ACTIVE_DIR).join(&p.key);
        if std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Sweeps the launcher root every [`SWEEP_EVERY`], once `store` (the agent's VMI informer) has
/// listed.
pub(super) async fn run(ctx: Arc<Context>, store: Store<VirtualMachineInstance>) {
    // The informer only picks the candidates (a consistent list decides), so a sweep need not
    // wait for it longer than one period: its store never said it was ready on the operator's
    // install, and that sweep never ran.
    let _ = tokio::time::timeout(SWEEP_EVERY, store.wait_until_ready()).await;
    tracing::info!(root = %ctx.config.run_root.display(), every = ?SWEEP_EVERY, "sweeping the launcher root of run directories that belong to nothing");
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        for path in sweep_once(&ctx, &store).await {
            tracing::info!(path = %path.display(), "removed a launcher run directory of nothing on this node");
        }
    }
}

#[cfg(test)]
mod tests;
