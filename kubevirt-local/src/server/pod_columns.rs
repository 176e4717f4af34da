//! The pod cells upstream's table printer computes (`kubectl get pods`): READY as ready/total
//! containers, STATUS as the reason a person wants (`Init:0/1`, `CrashLoopBackOff`, `Completed`,
//! `NotReady`, `Terminating`...), RESTARTS with how long ago the last one was, and `-o wide`'s
//! `<none>` placeholders.

use serde_json::{Value, json};

fn statuses(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// `ready/total` of the pod's containers.
pub fn ready(pod: &Value) -> Value {
    let total = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses(&pod["status"]["containerStatuses"])
        .iter()
        .filter(|c| c["ready"] == true)
        .count();
    json!(format!("{ready}/{total}"))
}

/// A terminated state's reason, else `Signal:N` or `ExitCode:N`.
fn terminated_reason(t: &Value) -> String {
    if let Some(r) = t["reason"].as_str().filter(|r| !r.is_empty()) {
        return r.to_string();
    }
    match t["signal"].as_i64().filter(|s| *s != 0) {
        Some(signal) => format!("Signal:{signal}"),
        None => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
    }
}

fn condition_true(pod: &Value, type_: &str) -> bool {
    statuses(&pod["status"]["conditions"])
        .iter()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

/// The STATUS cell.
pub fn status(pod: &Value) -> Value {
    let st = &pod["status"];
    let mut reason = st["reason"]
        .as_str()
        .filter(|r| !r.is_empty())
        .or(st["phase"].as_str())
        .unwrap_or_default()
        .to_string();
    let inits = statuses(&st["initContainerStatuses"]);
    let init_total = pod["spec"]["initContainers"]
        .as_array()
        .map_or(inits.len(), Vec::len);
    let mut initializing = false;
    for (i, c) in inits.iter().enumerate() {
        let state = &c["state"];
        let t = &state["terminated"];
        if t.is_object() && t["exitCode"].as_i64() == Some(0) {
            continue;
        }
        initializing = true;
        reason = if t.is_object() {
            format!("Init:{}", terminated_reason(t))
        } else if let Some(w) = state["waiting"]["reason"]
            .as_str()
            .filter(|w| !w.is_empty() && *w != "PodInitializing")
        {
            format!("Init:{w}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut running = false;
        for c in statuses(&st["containerStatuses"]).iter().rev() {
            let state = &c["state"];
            if let Some(w) = state["waiting"]["reason"]
                .as_str()
                .filter(|w| !w.is_empty())
            {
                reason = w.to_string();
            } else if state["terminated"].is_object() {
                reason = terminated_reason(&state["terminated"]);
            } else if state["running"].is_object() && c["ready"] == true {
                running = true;
            }
        }
        if reason == "Completed" && running {
            reason = if condition_true(pod, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = if st["reason"] == "NodeLost" {
            "Unknown".to_string()
        } else {
            "Terminating".to_string()
        };
    }
    json!(reason)
}

/// kubectl's short duration (`5s`, `3m2s`, `4h`, `2d3h`), as `HumanDuration` shows ages.
pub fn human(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => match s % 60 {
            0 => format!("{}m", s / 60),
            r => format!("{}m{r}s", s / 60),
        },
        600..10_800 => format!("{}m", s / 60),
        10_800..28_800 => match (s / 60) % 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h{m}m", s / 3600),
        },
        28_800..172_800 => format!("{}h", s / 3600),
        172_800..691_200 => match (s / 3600) % 24 {
            0 => format!("{}d", s / 86_400),
            h => format!("{}d{h}h", s / 86_400),
        },
        _ => format!("{}d", s / 86_400),
    }
}

/// The RESTARTS cell: the sum of the containers' restarts, and how long ago the last container
/// that restarted ended (`2 (14s ago)`).
pub fn restarts(pod: &Value, now: jiff::Timestamp) -> Value {
    let all = statuses(&pod["status"]["containerStatuses"]);
    let total: i64 = all.iter().filter_map(|c| c["restartCount"].as_i64()).sum();
    let last = all
        .iter()
        .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
        .filter_map(|t| t.parse::<jiff::Timestamp>().ok())
        .max();
    match last {
        Some(t) if total > 0 => {
            let ago = now.duration_since(t).as_secs();
            json!(format!("{total} ({} ago)", human(ago)))
        }
        _ => json!(total.to_string()),
    }
}

/// `<none>` for an empty cell, as the wide columns show it.
pub fn or_none(v: &Value) -> Value {
    match v.as_str().filter(|s| !s.is_empty()) {
        Some(s) => json!(s),
        None => json!("<none>"),
    }
}

/// The READINESS GATES cell: `<none>`, or how many of the pod's gates are True.
pub fn readiness_gates(pod: &Value) -> Value {
    let gates = statuses(&pod["spec"]["readinessGates"]);
    if gates.is_empty() {
        return json!("<none>");
    }
    let met = gates
        .iter()
        .filter(|g| {
            g["conditionType"]
                .as_str()
                .is_some_and(|t| condition_true(pod, t))
        })
        .count();
    json!(format!("{met}/{}", gates.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: Value, inits: Value) -> Value {
        json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": inits},
            "status": {"phase": "Running", "containerStatuses": containers,
                "initContainerStatuses": inits},
        })
    }

    #[test]
    fn ready_counts_ready_containers_of_the_spec() {
        let p = pod(json!([{"ready": true}, {"ready": false}]), json!(null));
        assert_eq!(ready(&p), "1/2");
        assert_eq!(ready(&json!({"spec": {"containers": [{}]}})), "0/1");
    }

    #[test]
    fn status_tells_what_kubectl_tells() {
        let waiting = json!([{"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "ready": false},
            {"state": {"running": {}}, "ready": true}]);
        assert_eq!(status(&pod(waiting, json!(null))), "CrashLoopBackOff");
        let init = json!([{"state": {"running": {}}}]);
        let p = pod(json!([]), init);
        assert_eq!(status(&p), "Init:0/1");
        let failed_init = json!([{"state": {"terminated": {"exitCode": 3}}}]);
        assert_eq!(status(&pod(json!([]), failed_init)), "Init:ExitCode:3");
        let done = json!([{"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"state": {"running": {}}, "ready": true}]);
        assert_eq!(status(&pod(done.clone(), json!(null))), "NotReady");
        let mut ready_pod = pod(done, json!(null));
        ready_pod["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        assert_eq!(status(&ready_pod), "Running");
        let killed = json!([{"state": {"terminated": {"exitCode": 137, "signal": 9}}}]);
        assert_eq!(status(&pod(killed, json!(null))), "Signal:9");
        let mut gone = pod(json!([]), json!(null));
        gone["metadata"]["deletionTimestamp"] = json!("2026-12-05T10:00:00Z");
        assert_eq!(status(&gone), "Terminating");
    }

    #[test]
    fn restarts_say_how_long_ago() {
        let now: jiff::Timestamp = "2026-12-05T10:05:00Z".parse().unwrap();
        let p = pod(
            json!([{"restartCount": 2, "lastState": {"terminated": {"finishedAt": "2026-12-05T10:04:46Z"}}},
                {"restartCount": 1}]),
            json!(null),
        );
        assert_eq!(restarts(&p, now), "3 (14s ago)");
        assert_eq!(
            restarts(&pod(json!([{"restartCount": 0}]), json!(null)), now),
            "0"
        );
        assert_eq!(human(185), "3m5s");
        assert_eq!(human(3 * 3600 + 60), "3h1m");
        assert_eq!(human(3 * 86_400), "3d");
    }

    #[test]
    fn wide_cells_show_none() {
        assert_eq!(or_none(&json!("")), "<none>");
        assert_eq!(or_none(&json!(null)), "<none>");
        assert_eq!(or_none(&json!("10.88.0.2")), "10.88.0.2");
        let mut p = pod(json!([]), json!(null));
        assert_eq!(readiness_gates(&p), "<none>");
        p["spec"]["readinessGates"] = json!([{"conditionType": "x"}, {"conditionType": "y"}]);
        p["status"]["conditions"] = json!([{"type": "x", "status": "True"}]);
        assert_eq!(readiness_gates(&p), "1/2");
    }
}
