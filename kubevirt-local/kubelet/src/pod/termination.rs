//! Container termination messages, as upstream's kubelet makes them: every container gets a
//! fresh host file bind-mounted at its `terminationMessagePath` (default `/dev/termination-log`);
//! once it has exited, the file's last 4096 bytes are its `state.terminated.message`. With
//! `terminationMessagePolicy: FallbackToLogsOnError`, a failed container that wrote nothing there
//! gets the tail of its log instead (the last 80 lines, at most 2048 bytes).
//!
//! The file is found again through the mounts the runtime reports for the container, so a
//! restarted kubelet reads the messages of containers it did not start.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};

/// Where the message is written when the container does not say.
pub const DEFAULT_PATH: &str = "/dev/termination-log";
/// At most this much of the file becomes the message (its end).
pub const MAX_MESSAGE: u64 = 4096;
/// The fallback takes at most this many of the log's last lines...
const LOG_LINES: usize = 80;
/// ...and at most this many bytes of them (their end).
const LOG_BYTES: usize = 2048;
/// How much of the log's end is read to find those lines.
const LOG_READ: u64 = 64 * 1024;

/// A message read this long after the exit is kept (not read again).
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// The annotations upstream's kubelet records the settings in on the runtime container.
const PATH_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePath";
const POLICY_ANNOTATION: &str = "io.kubernetes.container.terminationMessagePolicy";

/// The container's termination message path.
pub fn path(c: &Container) -> &str {
    c.termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_PATH)
}

fn fallback_to_logs(c: &Container) -> bool {
    c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
}

/// Makes a fresh, empty, world-writable message file for attempt `attempt` of `c` under `dir`
/// (`<pods>/<uid>/containers/<name>`) and mounts it into `cfg` at the message path.
pub fn attach(
    cfg: &mut cri::ContainerConfig,
    c: &Container,
    dir: &Path,
    attempt: u32,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let file = dir.join(format!("{attempt}-{nanos}"));
    std::fs::File::create(&file)?;
    // Writable by whatever user the container runs as, as upstream.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))?;
    cfg.mounts.push(cri::Mount {
        container_path: path(c).to_string(),
        host_path: file.to_string_lossy().into_owned(),
        ..Default::default()
    });
    cfg.annotations
        .insert(PATH_ANNOTATION.into(), path(c).to_string());
    cfg.annotations.insert(
        POLICY_ANNOTATION.into(),
        c.termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
    );
    Ok(file)
}

/// Removes the message files of attempts before `keep` under `dir` (their containers are gone).
pub fn prune(dir: &Path, keep: u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let attempt = name
            .split_once('-')
            .and_then(|(a, _)| a.parse::<u32>().ok());
        if attempt.is_some_and(|a| a < keep) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The last `max` bytes of `file` (empty if it cannot be read).
fn tail_bytes(file: &Path, max: u64) -> Vec<u8> {
    let Ok(mut f) = std::fs::File::open(file) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let _ = f.take(max).read_to_end(&mut out);
    out
}

/// The last [`LOG_LINES`] lines of a CRI log, at most [`LOG_BYTES`] of them.
fn log_tail(log: &Path) -> String {
    let raw = tail_bytes(log, LOG_READ);
    let mut text = String::from_utf8_lossy(&raw).into_owned();
    if raw.len() as u64 == LOG_READ
        && let Some(nl) = text.find('\n')
    {
        // The first line is likely cut.
        text.drain(..=nl);
    }
    let rendered = crate::server::render(&text, false);
    // Split on '\n' alone, keeping each line's bytes: a line that ends in '\r' is shown so.
    let lines: Vec<&str> = rendered.split_inclusive('\n').collect();
    let mut out = lines[lines.len().saturating_sub(LOG_LINES)..].concat();
    if out.len() > LOG_BYTES {
        let mut cut = out.len() - LOG_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out.drain(..cut);
    }
    out
}

/// The termination message of exited container `s` of spec `c` (its log under `log_dir` when
/// the runtime reports a relative log path).
pub fn message(c: &Container, s: &cri::ContainerStatus, log_dir: &Path) -> String {
    let file = s
        .mounts
        .iter()
        .find(|m| m.container_path == path(c))
        .map(|m| PathBuf::from(&m.host_path));
    let mut text = file
        .map(|f| String::from_utf8_lossy(&tail_bytes(&f, MAX_MESSAGE)).into_owned())
        .unwrap_or_default();
    if text.is_empty() && fallback_to_logs(c) && s.exit_code != 0 && !s.log_path.is_empty() {
        text = log_tail(&log_dir.join(&s.log_path));
    }
    text
}

/// Fills in the message of every exited container in `statuses` (by container name), reading
/// each container's file once it has settled (`seen`, by container id).
pub fn fill(
    pod: &Pod,
    statuses: &mut HashMap<String, cri::ContainerStatus>,
    seen: &mut HashMap<String, String>,
    log_dir: &Path,
) {
    let spec = pod.spec.as_ref();
    let containers = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.map(|s| &s.containers).into_iter().flatten());
    for c in containers {
        let Some(s) = statuses.get_mut(&c.name) else {
            continue;
        };
        if !super::status::exited(s) {
            continue;
        }
        let text = match seen.get(&s.id) {
            Some(t) => t.clone(),
            None => {
                let t = message(c, s, log_dir);
                // The runtime may still be copying the end of the log just after the exit.
                let ago = jiff::Timestamp::now().as_nanosecond() - i128::from(s.finished_at);
                if ago > SETTLED.as_nanos() as i128 {
                    seen.insert(s.id.clone(), t.clone());
                }
                t
            }
        };
        if text.is_empty() {
            continue;
        }
        if !s.message.is_empty() {
            s.message.push_str(": ");
        }
        s.message.push_str(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(policy: &str) -> Container {
        serde_json::from_value(json!({
            "name": "c", "terminationMessagePath": "/tmp/msg", "terminationMessagePolicy": policy
        }))
        .unwrap()
    }

    #[test]
    fn the_file_is_mounted_and_read_back_through_the_reported_mounts() {
        let dir = kubevirt_testsupport::tempdir("termination");
        let c = container("File");
        let mut cfg = cri::ContainerConfig::default();
        let file = attach(&mut cfg, &c, &dir.join("containers/c"), 0).unwrap();
        assert_eq!(cfg.mounts[0].container_path, "/tmp/msg");
        assert!(!cfg.mounts[0].readonly);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o666
        );
        assert_eq!(cfg.annotations[POLICY_ANNOTATION], "File");
        let mut s = cri::ContainerStatus {
            id: "id1".into(),
            state: cri::ContainerState::ContainerExited as i32,
            exit_code: 1,
            mounts: cfg.mounts.clone(),
            ..Default::default()
        };
        assert_eq!(message(&c, &s, &dir), "");
        // Only the end of a long message is kept.
        let long = format!("{}END", "x".repeat(5000));
        std::fs::write(&file, &long).unwrap();
        let m = message(&c, &s, &dir);
        assert_eq!(m.len() as u64, MAX_MESSAGE);
        assert!(m.ends_with("xEND"));
        // A second attempt gets a fresh file.
        let mut again = cri::ContainerConfig::default();
        let second = attach(&mut again, &c, &dir.join("containers/c"), 1).unwrap();
        assert_ne!(second, file);
        assert_eq!(std::fs::read(&second).unwrap(), b"");

        // Older attempts' files go once their containers are removed.
        let third = attach(&mut again, &c, &dir.join("containers/c"), 2).unwrap();
        prune(&dir.join("containers/c"), 1);
        assert!(!file.exists() && second.exists() && third.exists());
        std::fs::write(&file, "bye").unwrap();
        s.message = "OOM".into();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"}, "spec": {"containers": [c]}
        }))
        .unwrap();
        let mut statuses = HashMap::from([("c".to_string(), s)]);
        let mut seen = HashMap::new();
        fill(&pod, &mut statuses, &mut seen, &dir);
        assert_eq!(statuses["c"].message, "OOM: bye");
        assert_eq!(seen["id1"], "bye");
    }

    #[test]
    fn a_failed_container_falls_back_to_its_log_tail_only_when_asked() {
        let dir = kubevirt_testsupport::tempdir("termination-logs");
        let mut log = String::new();
        for i in 0..100 {
            log.push_str(&format!(
                "2026-12-05T10:00:00.000000000Z stdout F line {i}\n"
            ));
        }
        log.push_str("2026-12-05T10:00:00.000000000Z stderr P par\n");
        log.push_str("2026-12-05T10:00:00.000000000Z stderr F tial\n");
        std::fs::create_dir_all(dir.join("c")).unwrap();
        std::fs::write(dir.join("c/0.log"), log).unwrap();
        let mut s = cri::ContainerStatus {
            state: cri::ContainerState::ContainerExited as i32,
            exit_code: 2,
            log_path: "c/0.log".into(),
            ..Default::default()
        };
        let m = message(&container("FallbackToLogsOnError"), &s, &dir);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), LOG_LINES);
        assert_eq!(lines[0], "line 21");
        assert_eq!(lines[79], "partial");
        assert_eq!(message(&container("File"), &s, &dir), "");
        s.exit_code = 0;
        assert_eq!(
            message(&container("FallbackToLogsOnError"), &s, &dir),
            "",
            "only a failed container falls back"
        );
    }

    proptest::proptest! {
        /// Whatever a container logs, the fallback is the end of what `kubectl logs` shows,
        /// within the line and byte limits; whatever it writes, the message is the file's end.
        #[test]
        fn the_fallback_is_a_bounded_suffix_of_the_log(
            lines in proptest::collection::vec("[^\n]{0,300}", 0..120),
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..6000),
        ) {
            let dir = kubevirt_testsupport::tempdir("termination-prop");
            let log: String = lines
                .iter()
                .map(|l| format!("2026-12-05T10:00:00Z stdout F {l}\n"))
                .collect();
            std::fs::write(dir.join("log"), &log).unwrap();
            let tail = log_tail(&dir.join("log"));
            let shown = crate::server::render(&log, false);
            proptest::prop_assert!(tail.len() <= LOG_BYTES);
            proptest::prop_assert!(tail.lines().count() <= LOG_LINES);
            proptest::prop_assert!(shown.ends_with(&tail), "{tail:?} is not the end of {shown:?}");
            std::fs::write(dir.join("msg"), &raw).unwrap();
            let end = tail_bytes(&dir.join("msg"), MAX_MESSAGE);
            proptest::prop_assert_eq!(&end[..], &raw[raw.len().saturating_sub(4096)..]);
        }
    }

    #[test]
    fn the_log_fallback_keeps_the_last_2048_bytes() {
        let dir = kubevirt_testsupport::tempdir("termination-long");
        let line = format!(
            "2026-12-05T10:00:00.000000000Z stdout F {}\n",
            "é".repeat(600)
        );
        std::fs::write(dir.join("log"), line.repeat(5)).unwrap();
        let m = log_tail(&dir.join("log"));
        assert!(
            m.len() <= LOG_BYTES && m.len() > LOG_BYTES - 4,
            "{}",
            m.len()
        );
        assert!(m.ends_with("é\n"));
    }
}
