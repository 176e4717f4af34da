//! What a pod leaves on the host besides the runtime's objects: its volume directory, its logs
//! and its cgroup parent directories. Removed when the pod goes.

use std::path::{Path, PathBuf};

use super::config::{cgroup_parent, node_cgroup};
use super::worker::Context;

/// The cgroup directories the cgroup parent of pod `uid` of node `node` makes (one per v1
/// hierarchy, or the v2 one).
pub fn cgroup_dirs(node: &str, uid: &str) -> Vec<PathBuf> {
    in_every_hierarchy(&cgroup_parent(node, uid))
}

/// The existing directories at `rel` (a cgroup path) in the v2 root and in every v1 hierarchy.
fn in_every_hierarchy(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut out = vec![root.join(rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        out.extend(entries.flatten().map(|e| e.path().join(rel)));
    }
    out.retain(|p| p.is_dir());
    out
}

/// Removes a gone pod's cgroup directory tree, deepest first, killing what is still in it, as
/// upstream's kubelet does when it destroys a pod's cgroup: a container whose creation was cut
/// short (its shim or containerd killed) leaves a `runc init` waiting forever in its cgroup. A
/// process only leaves its cgroup once it has died, so the directory may stay until the next try.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            tracing::info!(pid, cgroup = %dir.display(), "killing a process left in a gone pod's cgroup");
            // SAFETY: kill(2) with a valid signal; the pid was read from the cgroup of a pod
            // that is gone, so it is that pod's leftover.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes every pod cgroup of node `node` (in each hierarchy), killing what is left in them,
/// and the node's directory once it is empty. For a stop that takes the pods down with the
/// runtime: a sandbox whose creation the stop interrupted leaves the cgroup runc made and no
/// sandbox to remove it with. Another node's pods on the same host are never looked at.
/// Returns whether none is left.
pub fn remove_all_pod_cgroups(node: &str) -> bool {
    remove_pod_cgroups(node, |_| true);
    for dir in in_every_hierarchy(&node_cgroup(node)) {
        let _ = std::fs::remove_dir(&dir);
    }
    in_every_hierarchy(&node_cgroup(node)).is_empty()
}

/// Removes the cgroups of node `node`'s pods that are not in `known`, killing what is left in
/// them: a pod's cgroups outlive its removal when a process was still in them then (a `runc
/// init` whose shim or containerd was killed mid-create), and nothing else would try again.
pub(super) fn remove_orphaned_pod_cgroups(node: &str, known: &std::collections::HashSet<String>) {
    remove_pod_cgroups(node, |uid| !known.contains(uid));
}

/// Removes the pod cgroups of node `node` whose uid `pick` accepts.
fn remove_pod_cgroups(node: &str, pick: impl Fn(&str) -> bool) {
    for dir in in_every_hierarchy(&node_cgroup(node)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// A pod cgroup `pod<uid>/c` of `node` (in the memory hierarchy on cgroup v1, else the v2
    /// root) holding a `sleep`; `None` where cgroups cannot be made (not root).
    fn pod_with_process(node: &str, uid: &str) -> Option<(PathBuf, std::process::Child)> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let root = if v1.is_dir() {
            v1
        } else {
            Path::new("/sys/fs/cgroup")
        };
        let dir = root
            .join(node_cgroup(node).trim_start_matches('/'))
            .join(format!("pod{uid}"))
            .join("c");
        std::fs::create_dir_all(&dir).ok()?;
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        Some((dir, child))
    }

    #[test]
    fn a_gone_pods_cgroup_is_removed_with_what_was_left_in_it_and_a_known_pods_is_kept() {
        let node = format!("cleanup-test-{}", std::process::id());
        let Some((gone_dir, mut gone)) = pod_with_process(&node, "gone") else {
            eprintln!("skipped: cgroups cannot be made here (needs root)");
            return;
        };
        let (kept_dir, mut kept) = pod_with_process(&node, "kept").unwrap();
        let known: HashSet<String> = ["kept".to_string()].into();
        let start = Instant::now();
        while gone_dir.exists() && start.elapsed() < Duration::from_secs(10) {
            remove_orphaned_pod_cgroups(&node, &known);
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!gone_dir.exists(), "the gone pod's cgroup is removed");
        assert!(!gone_dir.parent().unwrap().exists());
        let status = gone.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(kept_dir.exists(), "a known pod's cgroup stays");
        assert!(kept.try_wait().unwrap().is_none(), "and its process runs");

        // A stop that takes every pod down leaves nothing, the node's directory included.
        let start = Instant::now();
        while !remove_all_pod_cgroups(&node) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(in_every_hierarchy(&node_cgroup(&node)).is_empty());
        assert!(kept.wait().unwrap().code().is_none(), "killed");
    }
}
