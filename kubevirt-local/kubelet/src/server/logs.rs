//! Container logs as the kubelet keeps them (CRI format:
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>`, one file per attempt under
//! `<logs>/<ns>_<pod>_<uid>/<container>/<attempt>.log`) turned into what `kubectl logs` shows.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use serde::Deserialize;

/// The query of `/containerLogs` (upstream's `PodLogOptions`, the parts served here).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Keep streaming.
    pub follow: Option<bool>,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// The previous attempt's log.
    pub previous: Option<bool>,
    /// Prefix each line with its time.
    pub timestamps: Option<bool>,
}

/// Why no log is served.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No such pod or container on this node.
    #[error("container {container:?} in pod {namespace}/{pod} has no log on this node")]
    NotFound {
        /// The namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The container.
        container: String,
    },
    /// `previous` but the container never restarted.
    #[error("previous terminated container {0:?} not found")]
    NoPrevious(String),
    /// A name that is not a single path segment.
    #[error("invalid name {0:?}")]
    BadName(String),
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl LogError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            LogError::NotFound { .. } | LogError::NoPrevious(_) => StatusCode::NOT_FOUND,
            LogError::BadName(_) => StatusCode::BAD_REQUEST,
            LogError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn plain(name: &str) -> Result<&str, LogError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(LogError::BadName(name.to_string()));
    }
    Ok(name)
}

/// CRI log lines as `kubectl logs` prints them: partial (`P`) lines joined, the time prefix kept
/// only with `timestamps`. Lines that are not CRI-formatted pass through.
pub fn render(text: &str, timestamps: bool) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(time), Some(_stream), Some(tag), rest) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if timestamps && !out.ends_with(|c| c != '\n') {
            out.push_str(time);
            out.push(' ');
        }
        out.push_str(rest.unwrap_or_default());
        if tag != "P" {
            out.push('\n');
        }
    }
    out
}

/// The log file and its rendered text for `container` of `ns/pod` (the newest pod directory of
/// that name), honouring `previous`, `tailLines` and `timestamps`.
pub fn read_log(
    logs: &Path,
    ns: &str,
    pod: &str,
    container: &str,
    opts: &LogOptions,
) -> Result<(PathBuf, String), LogError> {
    let not_found = || LogError::NotFound {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
    };
    let prefix = format!("{}_{}_", plain(ns)?, plain(pod)?);
    let container = plain(container)?;
    let pod_dir = std::fs::read_dir(logs)
        .map_err(|_| not_found())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(not_found)?
        .path();
    let mut attempts: Vec<(u32, PathBuf)> = std::fs::read_dir(pod_dir.join(container))
        .map_err(|_| not_found())?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    attempts.sort();
    let file = if opts.previous.unwrap_or(false) {
        attempts
            .iter()
            .rev()
            .nth(1)
            .ok_or_else(|| LogError::NoPrevious(container.to_string()))?
            .1
            .clone()
    } else {
        attempts.last().ok_or_else(not_found)?.1.clone()
    };
    let raw = std::fs::read_to_string(&file).map_err(|source| LogError::Io {
        path: file.clone(),
        source,
    })?;
    let mut text = render(&raw, opts.timestamps.unwrap_or(false));
    if let Some(n) = opts.tail_lines {
        let lines: Vec<&str> = text.lines().collect();
        let keep = lines[lines.len().saturating_sub(n)..].join("\n");
        text = if keep.is_empty() { keep } else { keep + "\n" };
    }
    Ok((file, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cri_lines() {
        let raw = "2026-01-01T00:00:00.1Z stdout F hello\n2026-01-01T00:00:01Z stderr P par\n2026-01-01T00:00:01Z stderr F tial\n";
        assert_eq!(render(raw, false), "hello\npartial\n");
        assert_eq!(
            render(raw, true),
            "2026-01-01T00:00:00.1Z hello\n2026-01-01T00:00:01Z partial\n"
        );
    }

    #[test]
    fn finds_attempts_and_tails() {
        let dir = std::env::temp_dir().join(format!("kubelet-logs-{}", std::process::id()));
        let c = dir.join("ns_p_uid1").join("c");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), "t stdout F first run\n").unwrap();
        std::fs::write(
            c.join("1.log"),
            "t stdout F a\nt stdout F b\nt stdout F c\n",
        )
        .unwrap();
        let get = |o: LogOptions| read_log(&dir, "ns", "p", "c", &o).map(|(_, t)| t);
        assert_eq!(get(LogOptions::default()).unwrap(), "a\nb\nc\n");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(get(tail).unwrap(), "b\nc\n");
        let prev = LogOptions {
            previous: Some(true),
            ..Default::default()
        };
        assert_eq!(get(prev).unwrap(), "first run\n");
        assert!(matches!(
            read_log(&dir, "ns", "p", "other", &LogOptions::default()),
            Err(LogError::NotFound { .. })
        ));
        assert!(matches!(
            read_log(&dir, "ns", "..", "c", &LogOptions::default()),
            Err(LogError::BadName(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
