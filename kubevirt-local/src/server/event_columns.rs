//! The Table of Events (`kubectl get events`), as kube-apiserver's `printEvent` makes it for
//! core/v1 and events.k8s.io/v1 alike: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE, and with `-o
//! wide` (priority 1) SUBOBJECT, SOURCE, FIRST SEEN, COUNT and NAME, in upstream's order. There
//! is no leading Name column: the name is the last, wide-only one. Cells are read from either
//! shape (`involvedObject`/`regarding`, `message`/`note`, `source`/`reportingController`,
//! `count`/`series.count`/`deprecatedCount`, ...).

use super::table::age;
use serde_json::{Value, json};

/// The column definitions: (name, priority, description).
const COLUMNS: [(&str, i64, &str); 10] = [
    (
        "Last Seen",
        0,
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    (
        "Type",
        0,
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    (
        "Reason",
        0,
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    ("Object", 0, "The object that this event is about."),
    (
        "Subobject",
        1,
        "The field of the object this event is about (involvedObject.fieldPath).",
    ),
    ("Source", 1, "The component reporting this event."),
    (
        "Message",
        0,
        "A human-readable description of the status of this operation.",
    ),
    (
        "First Seen",
        1,
        "The time at which the event was first recorded.",
    ),
    ("Count", 1, "The number of times this event has occurred."),
    ("Name", 1, "Name must be unique within a namespace."),
];

/// The `columnDefinitions` of an Events Table.
pub fn definitions() -> Vec<Value> {
    COLUMNS
        .iter()
        .map(|(name, priority, description)| {
            let format = if *name == "Name" { "name" } else { "" };
            let type_ = if *name == "Count" {
                "integer"
            } else {
                "string"
            };
            json!({"name": name, "type": type_, "format": format,
                "description": description, "priority": priority})
        })
        .collect()
}

fn text<'a>(v: &'a Value, paths: &[&[&str]]) -> &'a str {
    paths
        .iter()
        .find_map(|path| {
            path.iter()
                .try_fold(v, |node, key| node.get(*key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("")
}

fn since(ts: &str, now: jiff::Timestamp) -> String {
    if ts.is_empty() {
        "<unknown>".into()
    } else {
        age(ts, now)
    }
}

/// The cells of event `e` at `now`, one per [`definitions`] entry.
pub fn cells(e: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let first = text(
        e,
        &[
            &["firstTimestamp"],
            &["deprecatedFirstTimestamp"],
            &["eventTime"],
        ],
    );
    let first_seen = since(first, now);
    let last = text(e, &[&["lastTimestamp"], &["deprecatedLastTimestamp"]]);
    let series = e.get("series").filter(|s| s.is_object());
    let (last_seen, count) = match series {
        Some(s) => (
            since(text(s, &[&["lastObservedTime"]]), now),
            s["count"].as_i64().unwrap_or(1),
        ),
        None => (
            if last.is_empty() {
                first_seen.clone()
            } else {
                since(last, now)
            },
            e["count"]
                .as_i64()
                .or_else(|| e["deprecatedCount"].as_i64())
                .filter(|c| *c != 0)
                .unwrap_or(1),
        ),
    };
    let target = |field: &str| text(e, &[&["involvedObject", field], &["regarding", field]]);
    let kind = target("kind").to_lowercase();
    let name = target("name");
    let shown = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    let component = text(
        e,
        &[
            &["source", "component"],
            &["reportingController"],
            &["deprecatedSource", "component"],
        ],
    );
    let instance = text(
        e,
        &[
            &["source", "host"],
            &["reportingInstance"],
            &["deprecatedSource", "host"],
        ],
    );
    let source = match (component.is_empty(), instance.is_empty()) {
        (true, _) => String::new(),
        (false, true) => component.to_string(),
        (false, false) => format!("{component}, {instance}"),
    };
    vec![
        json!(last_seen),
        json!(text(e, &[&["type"]])),
        json!(text(e, &[&["reason"]])),
        json!(shown),
        json!(target("fieldPath")),
        json!(source),
        json!(text(e, &[&["message"], &["note"]]).trim()),
        json!(first_seen),
        json!(count),
        e["metadata"]["name"].clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-01-02T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_core_event_prints_as_kube_apiserver_prints_it() {
        let e = json!({"metadata": {"name": "vm1.abc"}, "type": "Normal", "reason": "Started",
            "involvedObject": {"kind": "VirtualMachine", "name": "vm1", "fieldPath": "spec.x"},
            "source": {"component": "virt-controller", "host": "node1"},
            "message": " started \n", "count": 3,
            "firstTimestamp": "2026-01-01T23:50:00Z", "lastTimestamp": "2026-01-01T23:59:30Z"});
        assert_eq!(
            cells(&e, now()),
            [
                json!("30s"),
                json!("Normal"),
                json!("Started"),
                json!("virtualmachine/vm1"),
                json!("spec.x"),
                json!("virt-controller, node1"),
                json!("started"),
                json!("10m"),
                json!(3),
                json!("vm1.abc")
            ]
        );
        assert_eq!(definitions().len(), cells(&e, now()).len());
    }

    #[test]
    fn a_new_style_event_uses_its_series_and_event_time() {
        let e = json!({"metadata": {"name": "n"}, "type": "Warning", "reason": "R",
            "regarding": {"kind": "Pod"}, "reportingController": "kubelet", "note": "n",
            "eventTime": "2026-01-01T23:00:00Z",
            "series": {"count": 7, "lastObservedTime": "2026-01-01T23:59:00Z"}});
        let c = cells(&e, now());
        assert_eq!(c[0], "60s");
        assert_eq!(c[3], "pod");
        assert_eq!(c[5], "kubelet");
        assert_eq!(c[6], "n");
        assert_eq!(c[7], "60m");
        assert_eq!(c[8], 7);
        // No timestamps and no count: <unknown> and one occurrence.
        let bare = cells(&json!({"metadata": {"name": "b"}}), now());
        assert_eq!(
            (&bare[0], &bare[7], &bare[8]),
            (&json!("<unknown>"), &json!("<unknown>"), &json!(1))
        );
    }
}
