//! What a pod leaves on the host besides the runtime's objects: its volume directory, its logs
//! and its cgroup parent directories. Removed when the pod goes.

use std::path::{Path, PathBuf};

use super::config::{cgroup_parent, node_cgroup};
use super::worker::Context;

/// The cgroup directories the cgroup parent of pod `uid` of node `node` makes (one per v1
/// hierarchy, or the v2 one).
pub fn cgroup_dirs(node: &str, uid: &str) -> Vec<PathBuf> {
    let rel = cgroup_parent(node, uid);
    let rel = rel.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut out = vec![root.join(rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path().join(rel);
            if p.exists() {
                out.push(p);
            }
        }
    }
    out.retain(|p| p.exists());
    out
}

/// Removes an (empty of processes) cgroup directory tree, deepest first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes every pod cgroup of node `node` that no process is left in (in each hierarchy), and
/// the node's directory once it is empty. For a stop that takes the runtime down: a sandbox
/// whose creation the stop interrupted leaves the cgroup runc made and no sandbox to remove it
/// with. A cgroup that still holds a process is kept (`rmdir` refuses it). Another node's pods
/// on the same host are never looked at.
/// Returns whether none is left.
pub fn remove_empty_pod_cgroups(node: &str) -> bool {
    remove_pod_cgroups(node, |_| true);
    for dir in node_cgroup_dirs(node) {
        let _ = std::fs::remove_dir(&dir);
    }
    node_cgroup_dirs(node).is_empty()
}

/// Removes the cgroups of node `node`'s pods that are not in `known` once no process is left in
/// them: a pod's cgroups outlive its removal when a process was still in them then (a shim or
/// `runc` ending after containerd was killed), and nothing else would try again.
pub(super) fn remove_orphaned_pod_cgroups(node: &str, known: &std::collections::HashSet<String>) {
    remove_pod_cgroups(node, |uid| !known.contains(uid));
}

/// The node's cgroup directory in every hierarchy (those that exist).
fn node_cgroup_dirs(node: &str) -> Vec<PathBuf> {
    let parent = node_cgroup(node);
    let parent = parent.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join(parent)];
    if let Ok(entries) = std::fs::read_dir(root) {
        parents.extend(entries.flatten().map(|e| e.path().join(parent)));
    }
    parents.retain(|p| p.is_dir());
    parents
}

/// Removes (once empty of processes) the pod cgroups of node `node` whose uid `pick` accepts.
fn remove_pod_cgroups(node: &str, pick: impl Fn(&str) -> bool) {
    for dir in node_cgroup_dirs(node) {
        let Ok(pods) = std::fs::read_dir(&dir) else {
            continue;
        };
        for pod in pods.flatten() {
            let name = pod.file_name().to_string_lossy().into_owned();
            if let Some(uid) = name.strip_prefix("pod")
                && pick(uid)
                && pod.file_type().is_ok_and(|t| t.is_dir())
            {
                remove_cgroup(&pod.path());
            }
        }
    }
}

/// Removes the pod's directories and cgroups.
pub fn remove_host_state(ctx: &Context, uid: &str) {
    if uid.is_empty() {
        return;
    }
    let _ = std::fs::remove_dir_all(ctx.pods_dir.join(uid));
    if let Ok(entries) = std::fs::read_dir(&ctx.logs_dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .ends_with(&format!("_{uid}"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    for dir in cgroup_dirs(&ctx.node_name, uid) {
        remove_cgroup(&dir);
    }
}
