//! Logs of the long-running commands (`kubevirt-controller run|node`, `kubevirt-local up`):
//! `tracing` events on stderr, as text or as one JSON object per line, filtered by `RUST_LOG`
//! (default: this project's crates at `info`, everything else at `warn`).
//!
//! Library code only emits events; a binary chooses the output once with [`init`].

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str =
    "warn,kubevirt_controller=info,kubevirt_local=info,kubevirt_launcher_protocol=info";

/// How log events are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields), for log collectors.
    Json,
}

/// Installs the process-wide subscriber, writing to stderr. A second call (a test harness, an
/// embedder that set its own) leaves the first in place.
pub fn init(format: LogFormat) {
    // set_global_default fails only when a subscriber is already set, which is fine.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing::subscriber::set_global_default(subscriber(format, ansi, std::io::stderr));
}

/// The subscriber [`init`] installs, writing to `writer` (with terminal colours if `ansi`).
pub fn subscriber<W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

/// The outcome of one controller sync, as [`crate::controllers::Controllers`] reports it:
/// a failure is a warning naming the controller, a success is a debug event.
pub fn sync_outcome(controller: &'static str, outcome: Result<String, String>) {
    match outcome {
        Ok(object) => tracing::debug!(controller, object = %object, "synced"),
        Err(error) => tracing::warn!(controller, error = %error, "sync failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let sub = subscriber(format, false, move || out.clone());
        tracing::subscriber::with_default(sub, || {
            sync_outcome("vm", Ok("default/demo".into()));
            sync_outcome("vm", Err("creating the VMI: conflict".into()));
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_failed_sync_is_one_json_warning_with_its_fields() {
        let text = logged(LogFormat::Json);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 1, "a success is debug, filtered out: {text}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["fields"]["controller"], "vm");
        assert_eq!(lines[0]["fields"]["error"], "creating the VMI: conflict");
        assert_eq!(lines[0]["fields"]["message"], "sync failed");
    }

    #[test]
    fn text_lines_name_the_controller_and_the_error() {
        let text = logged(LogFormat::Text);
        assert!(
            text.contains("WARN") && text.contains("controller=\"vm\"")
                || text.contains("controller=vm"),
            "{text}"
        );
        assert!(text.contains("creating the VMI: conflict"), "{text}");
    }
}
