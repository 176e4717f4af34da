//! One store, two views of Events: `core/v1` (what `kubectl describe` lists) and
//! `events.k8s.io/v1` (what kube-rs's `Recorder` writes). Events are stored in the core form; the
//! events.k8s.io view converts field by field, as the API server's conversion does.

use serde_json::{Map, Value};

/// (core/v1 field, events.k8s.io/v1 field) pairs that carry the same data.
const FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn convert(v: &Value, from_core: bool) -> Value {
    let Some(src) = v.as_object() else {
        return v.clone();
    };
    let mut out = Map::new();
    for key in ["metadata", "apiVersion", "kind"] {
        if let Some(x) = src.get(key) {
            out.insert(key.to_string(), x.clone());
        }
    }
    for (core, events) in FIELDS {
        let (from, to) = if from_core {
            (core, events)
        } else {
            (events, core)
        };
        // Both forms' `series` is {count, lastObservedTime}, so it carries over as is.
        if let Some(x) = src.get(*from).filter(|x| !x.is_null()) {
            out.insert(to.to_string(), x.clone());
        }
    }
    Value::Object(out)
}

/// A stored (core/v1) Event as events.k8s.io/v1.
pub fn to_events_v1(core: &Value) -> Value {
    convert(core, true)
}

/// An events.k8s.io/v1 Event in the stored (core/v1) form.
pub fn from_events_v1(ev: &Value) -> Value {
    convert(ev, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_round_trip() {
        let ev = json!({"metadata": {"name": "e"}, "regarding": {"kind": "VirtualMachine", "name": "vm"}, "note": "started",
            "reason": "Started", "type": "Normal", "reportingController": "virt-controller", "reportingInstance": "n1",
            "eventTime": "2026-01-01T00:00:00.000000Z", "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:01.000000Z"}});
        let core = from_events_v1(&ev);
        assert_eq!(core["involvedObject"]["name"], "vm");
        assert_eq!(core["message"], "started");
        assert_eq!(core["reportingComponent"], "virt-controller");
        assert_eq!(to_events_v1(&core), ev);
    }
}
