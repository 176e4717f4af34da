//! The two line formats: text for people, JSON with upstream virt-launcher's keys for tools.

use super::{COMPONENT, LogFormat, VmiIdentity, vmi};
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats each event as one line of the chosen [`LogFormat`]. Timestamps are RFC 3339 in UTC
/// with microseconds (`2026-12-06T07:24:54.123456Z`), as upstream's.
#[derive(Debug, Clone, Copy)]
pub struct LineFormat {
    format: LogFormat,
}

impl LineFormat {
    /// Lines in `format`.
    pub fn new(format: LogFormat) -> Self {
        LineFormat { format }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let level = *event.metadata().level();
        match self.format {
            LogFormat::Text => text(&mut writer, &timestamp, level, vmi(), &fields),
            LogFormat::Json => {
                let pos = event
                    .metadata()
                    .file()
                    .map(|f| f.rsplit('/').next().unwrap_or(f))
                    .zip(event.metadata().line())
                    .map(|(file, line)| format!("{file}:{line}"));
                let line = json(&timestamp, level, vmi(), pos, fields);
                writeln!(writer, "{line}")
            }
        }
    }
}

/// `TIMESTAMP LEVEL namespace/name: message key=value ...`.
fn text(
    w: &mut impl fmt::Write,
    timestamp: &str,
    level: Level,
    vmi: Option<&VmiIdentity>,
    fields: &Fields,
) -> fmt::Result {
    write!(w, "{timestamp} {level:>5} ")?;
    if let Some(id) = vmi {
        if id.namespace.is_empty() {
            write!(w, "{}: ", id.name)?;
        } else {
            write!(w, "{}/{}: ", id.namespace, id.name)?;
        }
    }
    w.write_str(fields.message.as_deref().unwrap_or_default())?;
    for (key, value) in &fields.values {
        match value {
            Value::String(s) => write!(w, " {key}={s}")?,
            other => write!(w, " {key}={other}")?,
        }
    }
    w.write_char('\n')
}

/// Upstream's keys (`component`, `level` in lower case, `timestamp`, `msg`, `pos`, and for
/// the VMI `kind`, `namespace`, `name`, `uid`), then the event's own fields.
fn json(
    timestamp: &str,
    level: Level,
    vmi: Option<&VmiIdentity>,
    pos: Option<String>,
    fields: Fields,
) -> Value {
    let mut line = Map::new();
    if let Some(id) = vmi {
        line.insert("kind".into(), "VirtualMachineInstance".into());
        for (key, value) in [
            ("namespace", &id.namespace),
            ("name", &id.name),
            ("uid", &id.uid),
        ] {
            if !value.is_empty() {
                line.insert(key.into(), value.as_str().into());
            }
        }
    }
    line.extend(fields.values.into_iter().map(|(k, v)| (k.to_string(), v)));
    line.insert("component".into(), COMPONENT.into());
    line.insert("level".into(), upstream_level(level).into());
    line.insert("timestamp".into(), timestamp.into());
    line.insert("msg".into(), fields.message.unwrap_or_default().into());
    if let Some(pos) = pos {
        line.insert("pos".into(), pos.into());
    }
    Value::Object(line)
}

/// Upstream's level names (its `log` package: `warning`, not `warn`).
fn upstream_level(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// An event's message and its other fields, in the order written.
#[derive(Debug, Default)]
struct Fields {
    message: Option<String>,
    values: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.values.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::subscriber;
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
        let sub = subscriber(format, move || out.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::debug!("filtered out at the default level");
            tracing::info!(phase = %"Succeeded", rounds = 3u64, "the VMI ended");
            tracing::warn!(error = %"the disk is gone", "cleanup failed");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_have_upstream_keys_and_the_event_fields() {
        let text = logged(LogFormat::Json);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let ended = &lines[0];
        assert_eq!(ended["component"], "virt-launcher");
        assert_eq!(ended["level"], "info");
        assert_eq!(ended["msg"], "the VMI ended");
        assert_eq!(ended["phase"], "Succeeded");
        assert_eq!(ended["rounds"], 3);
        assert!(ended["pos"].as_str().unwrap().starts_with("format.rs:"));
        let ts = ended["timestamp"].as_str().unwrap();
        // RFC 3339 in UTC with microseconds: 2026-12-06T07:24:54.123456Z.
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        assert_eq!(lines[1]["level"], "warning");
        assert_eq!(lines[1]["error"], "the disk is gone");
    }

    #[test]
    fn the_vmi_names_every_json_line_and_an_unknown_part_is_left_out() {
        let id = VmiIdentity {
            namespace: "default".into(),
            name: "demo".into(),
            uid: String::new(),
        };
        let line = json("t", Level::ERROR, Some(&id), None, Fields::default());
        assert_eq!(line["kind"], "VirtualMachineInstance");
        assert_eq!(line["namespace"], "default");
        assert_eq!(line["name"], "demo");
        assert!(line.get("uid").is_none(), "{line}");
        assert_eq!(line["level"], "error");
        assert_eq!(line["msg"], "");
    }

    #[test]
    fn text_lines_read_as_sentences_with_fields() {
        let logged_text = logged(LogFormat::Text);
        let lines: Vec<&str> = logged_text.lines().collect();
        assert_eq!(lines.len(), 2, "{logged_text}");
        assert!(
            lines[0].ends_with(" INFO the VMI ended phase=Succeeded rounds=3"),
            "{logged_text}"
        );
        assert!(
            lines[1].ends_with(" WARN cleanup failed error=the disk is gone"),
            "{logged_text}"
        );
        let id = VmiIdentity {
            namespace: "default".into(),
            name: "demo".into(),
            uid: "u".into(),
        };
        let mut line = String::new();
        let fields = Fields {
            message: Some("running".into()),
            values: vec![("console", "/run/c.sock".into())],
        };
        text(&mut line, "t", Level::INFO, Some(&id), &fields).unwrap();
        assert_eq!(line, "t  INFO default/demo: running console=/run/c.sock\n");
    }
}
