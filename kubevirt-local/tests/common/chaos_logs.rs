//! What a failed chaos run keeps: every container's log of the namespaces it names (the current
//! container's and, after a restart, the one before: `kubectl logs --previous`), written to a
//! directory that outlives the run, with the end of each log on stderr. A run deletes its pods at
//! the end and its kills restart containers: without this, the logs that would explain a failure
//! are gone with it.

use std::path::{Path, PathBuf};

use super::chaos::{items, kubectl};

/// Lines of each log printed to stderr (the whole log is in the kept directory).
const TAIL: usize = 40;

/// Keeps the logs of `namespaces` when dropped while the test panics (an invariant failed).
/// Drop it before the node stops: declare it after the node's handle.
pub struct LogsOnFailure {
    data: PathBuf,
    suite: String,
    namespaces: Vec<String>,
}

impl LogsOnFailure {
    /// For the cluster whose data directory is `data`.
    pub fn new(data: &Path, suite: &str, namespaces: &[&str]) -> Self {
        Self {
            data: data.to_path_buf(),
            suite: suite.to_string(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Writes every container's log below a new directory, prints each one's end; returns the
    /// directory.
    pub fn keep(&self) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kv-{}-logs-{}-{}",
            self.suite,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("{}: keeping the logs in {}: {e}", self.suite, dir.display());
            return dir;
        }
        for ns in &self.namespaces {
            for pod in items(&self.data, ns, "pods").unwrap_or_default() {
                let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                let containers = pod["spec"]["containers"].as_array().cloned();
                for c in containers.unwrap_or_default() {
                    let c = c["name"].as_str().unwrap_or_default();
                    for previous in [true, false] {
                        self.one(&dir, ns, name, c, previous);
                    }
                }
            }
        }
        eprintln!(
            "{}: every container's log is kept in {}",
            self.suite,
            dir.display()
        );
        dir
    }

    fn one(&self, dir: &Path, ns: &str, pod: &str, container: &str, previous: bool) {
        let mut args = vec!["logs", "-n", ns, pod, "-c", container];
        if previous {
            args.push("--previous");
        }
        let out = kubectl(&self.data, &args, None);
        if !out.status.success() || out.stdout.is_empty() {
            return;
        }
        let which = if previous { ".previous" } else { "" };
        let file = dir.join(format!("{ns}_{pod}_{container}{which}.log"));
        let _ = std::fs::write(&file, &out.stdout);
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("DEBUG")).collect();
        eprintln!(
            "----- {ns}/{pod} {container}{which} (last {TAIL} lines that are not DEBUG) -----\n{}",
            lines[lines.len().saturating_sub(TAIL)..].join("\n")
        );
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep();
        }
    }
}
