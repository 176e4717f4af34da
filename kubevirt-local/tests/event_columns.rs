//! `kubectl get events` against a real `kubevirt-local apiserver` prints kube-apiserver's
//! columns: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE, and with `-o wide` SUBOBJECT, SOURCE,
//! FIRST SEEN, COUNT, NAME; for core/v1 Events and events.k8s.io/v1 Events alike.

mod common;

use common::Server;
use serde_json::json;

fn words(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn events_print_kube_apiservers_columns() {
    let s = Server::start("event-columns");
    let now = jiff::Timestamp::now();
    let ago = |secs: i64| {
        // Truncated, never rounded up: a stamp half a second in the future showed 19m for 20m.
        (now - jiff::SignedDuration::from_secs(secs))
            .round(
                jiff::TimestampRound::new()
                    .smallest(jiff::Unit::Second)
                    .mode(jiff::RoundMode::Trunc),
            )
            .unwrap()
            .to_string()
    };
    let core = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "vm1.started", "namespace": "default"},
        "involvedObject": {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm1",
            "namespace": "default", "fieldPath": "spec.template"},
        "type": "Normal", "reason": "Started", "message": "VM vm1 started",
        "source": {"component": "virt-controller", "host": "node-a"}, "count": 4,
        "firstTimestamp": ago(1200), "lastTimestamp": ago(30)});
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(&core.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let plain = s.ok(&["get", "events"]);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(
        words(lines[0]),
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{plain}"
    );
    let row = words(lines[1]);
    assert_eq!(
        row[1..],
        ["Normal", "Started", "virtualmachine/vm1", "VM vm1 started"],
        "{plain}"
    );
    assert!(row[0].ends_with('s'), "last seen about 30s ago: {plain}");

    let wide = s.ok(&["get", "events", "-o", "wide"]);
    let lines: Vec<&str> = wide.lines().collect();
    assert_eq!(
        words(lines[0]),
        [
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST SEEN",
            "COUNT",
            "NAME"
        ],
        "{wide}"
    );
    let row = words(lines[1]);
    assert_eq!(
        row[1..],
        [
            "Normal",
            "Started",
            "virtualmachine/vm1",
            "spec.template",
            "virt-controller, node-a",
            "VM vm1 started",
            "20m",
            "4",
            "vm1.started"
        ],
        "{wide}"
    );

    // An events.k8s.io/v1 Event (what kube-rs's Recorder writes) prints the same way: its
    // series' count and last observation, its reporting controller as the source.
    let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "pod1.pulled", "namespace": "default"},
        "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "pod1", "namespace": "default"},
        "type": "Warning", "reason": "BackOff", "note": "Back-off pulling image",
        "action": "Pulling", "reportingController": "kubelet", "reportingInstance": "node-b",
        "eventTime": format!("{}", (now - jiff::SignedDuration::from_secs(600)).round(jiff::Unit::Microsecond).unwrap()),
        "series": {"count": 9, "lastObservedTime": format!("{}", (now - jiff::SignedDuration::from_secs(5)).round(jiff::Unit::Microsecond).unwrap())}});
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(&v1.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wide = s.ok(&[
        "get",
        "events.v1.events.k8s.io",
        "-o",
        "wide",
        "--field-selector",
        "metadata.name=pod1.pulled",
    ]);
    let row = words(wide.lines().nth(1).unwrap_or_default());
    assert_eq!(
        row[1..],
        [
            "Warning",
            "BackOff",
            "pod/pod1",
            "kubelet, node-b",
            "Back-off pulling image",
            "10m",
            "9",
            "pod1.pulled"
        ],
        "{wide}"
    );
}
