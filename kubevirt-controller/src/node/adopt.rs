//! What a restarted node agent does with the run directories an earlier agent left: those of
//! VMIs that still run here are adopted by their own syncs ([`super::agent`]); this module stops
//! the rest. A launcher whose VMI is gone, has another uid, is final or runs on another node is
//! shut down gracefully (forced after the grace period) and its run directory removed; a dead
//! run directory of such a VMI is removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_api::defaults::DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS;

use super::agent::stop;
use super::launcher::Launcher;
use crate::vm::instance::is_final;

/// How long to wait between attempts to list the VMIs.
const RETRY: Duration = Duration::from_secs(1);

/// The run directories below `run_root` (`<ns>/<name>-<uid8>`), as `(namespace, directory)`.
pub fn run_dirs(run_root: &Path) -> Vec<(String, PathBuf)> {
    let mut dirs = Vec::new();
    for ns in std::fs::read_dir(run_root).into_iter().flatten().flatten() {
        let namespace = ns.file_name().to_string_lossy().into_owned();
        // No namespace starts with a dot: those are the agent's own (the memory-state store).
        if namespace.starts_with('.') {
            continue;
        }
        for vmi in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            if vmi.path().is_dir() {
                dirs.push((namespace.clone(), vmi.path()));
            }
        }
    }
    dirs
}

/// Whether `dir` (`<name>-<uid8>` in `namespace`) is the run directory of a VMI that still
/// runs on `node`.
fn wanted(vmis: &[VirtualMachineInstance], node: &str, namespace: &str, dir: &Path) -> bool {
    let Some(base) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    vmis.iter().any(|v| {
        let uid = v.uid().unwrap_or_default();
        let on_node = v
            .status
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(|n| n == node);
        v.namespace().as_deref() == Some(namespace)
            && base == format!("{}-{}", v.name_any(), &uid[..uid.len().min(8)])
            && on_node
            && !is_final(v)
    })
}

/// Stops the launchers in `dirs` (left by an earlier agent) whose VMI no longer runs on `node`,
/// and removes their run directories. Lists the VMIs until the API server answers.
pub async fn stop_orphans(
    api: Api<VirtualMachineInstance>,
    node: String,
    dirs: Vec<(String, PathBuf)>,
) {
    if dirs.is_empty() {
        return;
    }
    let vmis = loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => break list.items,
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    };
    let wait = Duration::from_secs(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS.max(0) as u64);
    let mut stops = Vec::new();
    for (namespace, dir) in dirs {
        if wanted(&vmis, &node, &namespace, &dir) {
            continue;
        }
        stops.push(tokio::spawn(async move {
            // One that runs but names no pid yet (still starting) is asked again.
            let mut found = Launcher::find(&dir, None).await;
            let deadline = tokio::time::Instant::now() + wait;
            while found.is_err() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(RETRY).await;
                found = Launcher::find(&dir, None).await;
            }
            if let Ok(Some(mut l)) = found {
                tracing::info!(
                    run_dir = %dir.display(),
                    pid = ?l.pid(),
                    "stopping a launcher whose VMI no longer runs here"
                );
                stop(&mut l, None, wait).await;
            }
            let _ = std::fs::remove_dir_all(&dir);
            remove_empty_namespace_dir(&dir);
        }));
    }
    for s in stops {
        let _ = s.await;
    }
}

/// Removes the namespace's directory of direct mode's run directory `dir`
/// (`<run root>/<ns>/<name>-<uid8>`) once it holds nothing: a clean stop of `up` leaves the run
/// root empty. Only an empty directory goes (`rmdir`), so another VMI's of the namespace stays;
/// a launcher starting there meanwhile makes it again ([`Launcher::spawn`] retries).
pub fn remove_empty_namespace_dir(dir: &Path) {
    if let Some(namespace) = dir.parent() {
        let _ = std::fs::remove_dir(namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An emptied namespace directory goes with its last run directory; one that still holds
    /// another VMI's stays, and so does the run root.
    #[test]
    fn the_last_run_directory_of_a_namespace_takes_its_directory_along() {
        let root = std::env::temp_dir().join(format!("kv-adopt-ns-{}", std::process::id()));
        let (a, b) = (root.join("ns/a-1234"), root.join("ns/b-5678"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::remove_dir_all(&a).unwrap();
        remove_empty_namespace_dir(&a);
        assert!(b.is_dir(), "another VMI's run directory stays");
        std::fs::remove_dir_all(&b).unwrap();
        remove_empty_namespace_dir(&b);
        assert!(
            !root.join("ns").exists(),
            "the emptied namespace directory goes"
        );
        assert!(root.is_dir(), "the run root stays");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
