//! The node's memory-state store (ours, beyond upstream): what a launcher saved on the `snapshot`
//! control op for a VirtualMachineSnapshot with the memory opt-in
//! ([`crate::snapshot::memory`]) is moved out of the VMI's run directory — which goes with the
//! VMI — into `<run-root>/.memory-snapshots/<namespace>/<content>/`, on the same file system
//! (a rename, no copy). A VMI that resumes it gets its files hard-linked (copied where links
//! cannot be made) into `<its run dir>/snapshots/<content>/`, where its launcher maps guest RAM
//! `MAP_PRIVATE`: the guest's writes never reach the stored file, so one memory state can be
//! resumed again by a later restore. A stored state whose content is gone is removed
//! ([`sweep`]): the content's lifetime (its snapshot's `deletionPolicy`) is the state's.
//!
//! The store's name starts with a dot: neither a namespace (direct mode's run directories) nor
//! a uid (pods mode's) can, so nothing that scans the run root takes it for a run directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The store below a node agent's run root.
pub const STORE_DIR: &str = ".memory-snapshots";

/// The launcher's snapshot directory in a run directory (`kubevirt-launcher`'s
/// `run::SNAPSHOTS_DIR`).
pub const RUN_DIR_SNAPSHOTS: &str = "snapshots";

/// Errors of the store. Each names the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state asked for is not in this node's store.
    #[error(
        "the memory state {name} of namespace {namespace} is not on this node (looked in {path}): it lives on the node that took it, and is gone once its snapshot content is deleted"
    )]
    Missing {
        /// The namespace.
        namespace: String,
        /// The state's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// Where the state `name` of `namespace` is kept (both are Kubernetes names the caller checked).
pub fn stored(run_root: &Path, namespace: &str, name: &str) -> PathBuf {
    run_root.join(STORE_DIR).join(namespace).join(name)
}

/// Moves the state the launcher just wrote to `<run_dir>/snapshots/<name>` into the store,
/// replacing an older one of the same name.
///
/// # Errors
/// The directory is missing or cannot be moved.
pub fn keep(
    run_dir: &Path,
    run_root: &Path,
    namespace: &str,
    name: &str,
) -> Result<(), StoreError> {
    let from = run_dir.join(RUN_DIR_SNAPSHOTS).join(name);
    let to = stored(run_root, namespace, name);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    match std::fs::remove_dir_all(&to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("replacing", &to)(e)),
    }
    std::fs::rename(&from, &to).map_err(io("moving the memory state into the store from", &from))
}

/// Places the stored state `name` of `namespace` into `<run_dir>/snapshots/<name>` for a
/// launcher to resume (hard links; a copy where the run directory is on another file system).
///
/// # Errors
/// [`StoreError::Missing`] when this node does not hold it; a file operation failed.
pub fn place(
    run_root: &Path,
    namespace: &str,
    name: &str,
    run_dir: &Path,
) -> Result<PathBuf, StoreError> {
    let from = stored(run_root, namespace, name);
    if !from.is_dir() {
        return Err(StoreError::Missing {
            namespace: namespace.into(),
            name: name.into(),
            path: from,
        });
    }
    let to = run_dir.join(RUN_DIR_SNAPSHOTS).join(name);
    std::fs::create_dir_all(&to).map_err(io("creating", &to))?;
    for entry in std::fs::read_dir(&from).map_err(io("reading", &from))? {
        let entry = entry.map_err(io("reading", &from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if dst.exists() {
            continue;
        }
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).map_err(io("copying the memory state from", &src))?;
        }
    }
    Ok(to)
}

/// The states in the store, as `(namespace, name)`.
pub fn list(run_root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let root = run_root.join(STORE_DIR);
    for ns in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for s in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            out.push((
                ns.file_name().to_string_lossy().into_owned(),
                s.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    out.sort();
    out
}

/// Which stored states to remove: those whose content (`namespace`, name) is not in `contents`.
pub fn orphans(
    stored: &[(String, String)],
    contents: &BTreeSet<(String, String)>,
) -> Vec<(String, String)> {
    stored
        .iter()
        .filter(|s| !contents.contains(*s))
        .cloned()
        .collect()
}

/// Removes the stored states no content in `contents` names; the ones removed.
pub fn sweep(run_root: &Path, contents: &BTreeSet<(String, String)>) -> Vec<(String, String)> {
    let gone = orphans(&list(run_root), contents);
    for (ns, name) in &gone {
        let _ = std::fs::remove_dir_all(stored(run_root, ns, name));
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(tag: &str) -> PathBuf {
        let r = std::env::temp_dir().join(format!("kv-memstore-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&r);
        r
    }

    #[test]
    fn a_state_is_kept_placed_by_link_and_swept_with_its_content() {
        let r = root("cycle");
        let run = r.join("uid-1");
        let saved = run.join(RUN_DIR_SNAPSHOTS).join("c1");
        std::fs::create_dir_all(&saved).unwrap();
        std::fs::write(saved.join("memory"), b"ram").unwrap();
        std::fs::write(saved.join("vmstate"), b"state").unwrap();
        keep(&run, &r, "ns", "c1").unwrap();
        assert!(!saved.exists(), "moved, not copied");
        assert_eq!(list(&r), [("ns".to_string(), "c1".to_string())]);

        let next = r.join("uid-2");
        let placed = place(&r, "ns", "c1", &next).unwrap();
        assert_eq!(std::fs::read(placed.join("memory")).unwrap(), b"ram");
        // The run directory goes with its VMI; the store keeps the state.
        std::fs::remove_dir_all(&next).unwrap();
        assert!(stored(&r, "ns", "c1").join("vmstate").is_file());

        let keep_it = BTreeSet::from([("ns".to_string(), "c1".to_string())]);
        assert!(sweep(&r, &keep_it).is_empty());
        assert_eq!(sweep(&r, &BTreeSet::new()).len(), 1);
        assert!(list(&r).is_empty());
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn a_state_of_another_node_is_missing_with_a_reason() {
        let r = root("missing");
        let e = place(&r, "ns", "c9", &r.join("uid")).unwrap_err();
        assert!(
            matches!(e, StoreError::Missing { .. }) && e.to_string().contains("not on this node"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&r);
    }

    #[test]
    fn only_states_without_a_content_are_orphans() {
        let stored = vec![
            ("a".to_string(), "c1".to_string()),
            ("b".to_string(), "c1".to_string()),
        ];
        let contents = BTreeSet::from([("a".to_string(), "c1".to_string())]);
        assert_eq!(orphans(&stored, &contents), [("b".into(), "c1".into())]);
    }
}
