//! `meta.k8s.io/v1` Table responses (what `kubectl get` prints), with printer columns evaluated on
//! the server.

use super::{event_columns, printers};
use crate::registry::Resource;
use crate::semantics::jsonpath;
use serde_json::{Value, json};

/// How much of each object goes in `rows[].object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// `PartialObjectMetadata` (default).
    Metadata,
    /// The whole object.
    Object,
    /// Nothing.
    None,
}

impl Include {
    /// From the `includeObject` query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Object") => Include::Object,
            Some("None") => Include::None,
            _ => Include::Metadata,
        }
    }
}

/// A Table of `objects`.
pub fn table(
    res: &Resource,
    objects: &[Value],
    rv: &str,
    cont: &str,
    include: Include,
    now: jiff::Timestamp,
) -> Value {
    if is_event(res) {
        let rows: Vec<Value> = objects
            .iter()
            .map(|o| json!({"cells": event_columns::cells(o, now), "object": included(o, include)}))
            .collect();
        return json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv, "continue": cont},
            "columnDefinitions": event_columns::definitions(), "rows": rows});
    }
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    for c in &res.columns {
        defs.push(json!({"name": c.name, "type": c.type_, "format": "", "description": c.description, "priority": c.priority}));
    }
    let rows: Vec<Value> = objects.iter().map(|o| row(res, o, include, now)).collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv, "continue": cont},
        "columnDefinitions": defs, "rows": rows})
}

fn row(res: &Resource, obj: &Value, include: Include, now: jiff::Timestamp) -> Value {
    let name = printers::name(res, obj).unwrap_or_else(|| obj["metadata"]["name"].clone());
    let mut cells = vec![name];
    for c in &res.columns {
        if let Some(cell) = printers::cell(res, c, obj) {
            cells.push(cell);
            continue;
        }
        let found = jsonpath::select(obj, &c.json_path);
        let cell = match (found.as_slice(), c.type_.as_str()) {
            ([], _) => Value::Null,
            ([v], "date") => v
                .as_str()
                .map(|s| json!(age(s, now)))
                .unwrap_or(Value::Null),
            ([v], _) => (*v).clone(),
            (many, _) => json!(
                many.iter()
                    .map(|v| v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        cells.push(cell);
    }
    json!({"cells": cells, "object": included(obj, include)})
}

/// Events (core and events.k8s.io) print as kube-apiserver's `printEvent`.
fn is_event(res: &Resource) -> bool {
    res.builtin && res.kind == "Event" && matches!(res.group.as_str(), "" | "events.k8s.io")
}

/// `rows[].object` of `obj`.
fn included(obj: &Value, include: Include) -> Value {
    match include {
        Include::Object => obj.clone(),
        Include::None => Value::Null,
        Include::Metadata => partial_metadata(obj),
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// A human duration since `ts` (`5m`, `3h`, `2d`), as kubectl's AGE column shows it.
pub fn age(ts: &str, now: jiff::Timestamp) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return "<invalid>".into();
    };
    let secs = (now.as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_like_kubectl() {
        let now: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(age("2026-01-01T23:59:30Z", now), "30s");
        assert_eq!(age("2026-01-01T23:55:00Z", now), "5m0s");
        assert_eq!(age("2026-01-01T00:00:00Z", now), "24h");
        assert_eq!(age("2025-12-01T00:00:00Z", now), "32d");
    }
}
