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
pub fn remove_empty_pod_cgroups(node: &str) {
    let parent = node_cgroup(node);
    let parent = parent.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join(parent)];
    if let Ok(entries) = std::fs::read_dir(root) {
        parents.extend(entries.flatten().map(|e| e.path().join(parent)));
    }
    for dir in parents {
        let Ok(pods) = std::fs::read_dir(&dir) else {
            continue;
        };
        for pod in pods.flatten() {
            if pod.file_name().to_string_lossy().starts_with("pod")
                && pod.file_type().is_ok_and(|t| t.is_dir())
            {
                remove_cgroup(&pod.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
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
