//! The local scheduler against the real kubectl: pods without a node are bound through
//! `pods/binding` to a node that fits, or stay Pending with upstream's Unschedulable message and
//! a FailedScheduling event, and are bound once a node changes so that they fit. The nodes are
//! Node objects the test writes (no kubelet runs here).

mod common;

use common::plane::Plane;
use kubevirt_testsupport::eventually;
use serde_json::json;

fn pod(name: &str, requests: serde_json::Value, extra: serde_json::Value) -> String {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": requests, "limits": requests}}]}});
    json_patch::merge(&mut p, &extra);
    p.to_string()
}

fn node_of(p: &Plane, name: &str) -> Option<String> {
    let n = p.get(&["pod", name], "{.spec.nodeName}");
    (!n.is_empty()).then_some(n)
}

fn scheduled_condition(p: &Plane, name: &str) -> String {
    p.get(
        &["pod", name],
        "{.status.conditions[?(@.type==\"PodScheduled\")].status} {.status.conditions[?(@.type==\"PodScheduled\")].reason} {.status.conditions[?(@.type==\"PodScheduled\")].message}",
    )
}

#[test]
fn pods_are_bound_where_they_fit_or_say_why_not() {
    let p = Plane::start("scheduler");
    p.node(
        "node-a",
        json!({"cpu": "2", "memory": "2Gi", "pods": "10", "devices.kubevirt.io/kvm": "1"}),
        json!({}),
    );
    p.node(
        "node-b",
        json!({"cpu": "8", "memory": "1Gi", "pods": "10"}),
        json!({"taints": [{"key": "dedicated", "value": "vm", "effect": "NoSchedule"}]}),
    );
    p.ok(&["label", "node", "node-b", "zone=b"]);

    // Fits node-a only (node-b is tainted).
    p.ok_in(
        &["apply", "-f", "-"],
        Some(&pod(
            "small",
            json!({"cpu": "500m", "memory": "256Mi"}),
            json!({}),
        )),
    );
    assert_eq!(eventually("small bound", || node_of(&p, "small")), "node-a");
    assert_eq!(scheduled_condition(&p, "small"), "True  ");

    // Tolerates the taint and selects zone b.
    let tolerant = pod(
        "tolerant",
        json!({"cpu": "1", "memory": "128Mi"}),
        json!({"spec": {
        "nodeSelector": {"zone": "b"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "vm", "effect": "NoSchedule"}]}}),
    );
    p.ok_in(&["apply", "-f", "-"], Some(&tolerant));
    assert_eq!(
        eventually("tolerant bound", || node_of(&p, "tolerant")),
        "node-b"
    );

    // Required node affinity with matchFields and Gt/NotIn.
    let pinned = pod(
        "pinned",
        json!({"cpu": "100m"}),
        json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}],
             "matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}]}}}}}),
    );
    p.ok_in(&["apply", "-f", "-"], Some(&pinned));
    assert_eq!(
        eventually("pinned bound", || node_of(&p, "pinned")),
        "node-a"
    );

    // An extended resource: one kvm device on node-a, so the second VM pod waits.
    p.ok_in(
        &["apply", "-f", "-"],
        Some(&pod(
            "vm1",
            json!({"devices.kubevirt.io/kvm": "1"}),
            json!({}),
        )),
    );
    assert_eq!(eventually("vm1 bound", || node_of(&p, "vm1")), "node-a");
    p.ok_in(
        &["apply", "-f", "-"],
        Some(&pod(
            "vm2",
            json!({"devices.kubevirt.io/kvm": "1"}),
            json!({}),
        )),
    );
    let why = eventually("vm2 unschedulable", || {
        let c = scheduled_condition(&p, "vm2");
        c.starts_with("False").then_some(c)
    });
    assert_eq!(
        why,
        "False Unschedulable 0/2 nodes are available: 1 Insufficient devices.kubevirt.io/kvm, 1 node(s) had untolerated taint {dedicated: vm}."
    );

    // Too big for either node: Pending with upstream's message and an event.
    p.ok_in(
        &["apply", "-f", "-"],
        Some(&pod("huge", json!({"memory": "8Gi"}), json!({}))),
    );
    let why = eventually("huge unschedulable", || {
        let c = scheduled_condition(&p, "huge");
        c.starts_with("False").then_some(c)
    });
    assert_eq!(
        why,
        "False Unschedulable 0/2 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: vm}."
    );
    assert_eq!(p.get(&["pod", "huge"], "{.status.phase}"), "Pending");
    let events = eventually("a FailedScheduling event", || {
        let e = p.ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling,involvedObject.name=huge",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        (!e.is_empty()).then_some(e)
    });
    assert!(events.contains("Insufficient memory"), "{events}");

    // The node grows: huge is retried and bound without being touched.
    p.node_status(
        "node-a",
        json!({"cpu": "2", "memory": "16Gi", "pods": "10", "devices.kubevirt.io/kvm": "1"}),
        "True",
    );
    assert_eq!(
        eventually("huge bound after the node grew", || node_of(&p, "huge")),
        "node-a"
    );
    assert_eq!(scheduled_condition(&p, "huge"), "True  ");

    // A cordoned node takes nothing new.
    p.ok(&["cordon", "node-a"]);
    p.ok_in(
        &["apply", "-f", "-"],
        Some(&pod("late", json!({"cpu": "100m"}), json!({}))),
    );
    let why = eventually("late unschedulable", || {
        let c = scheduled_condition(&p, "late");
        c.starts_with("False").then_some(c)
    });
    assert!(why.contains("1 node(s) were unschedulable"), "{why}");
    p.ok(&["uncordon", "node-a"]);
    assert_eq!(
        eventually("late bound after uncordon", || node_of(&p, "late")),
        "node-a"
    );

    // Another scheduler's pod is left alone.
    p.ok_in(
        &["apply", "-f", "-"],
        Some(&pod(
            "other",
            json!({}),
            json!({"spec": {"schedulerName": "my-scheduler"}}),
        )),
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(node_of(&p, "other"), None);
    assert_eq!(scheduled_condition(&p, "other"), "  ");
}

#[test]
fn binding_an_already_bound_pod_is_a_conflict() {
    let p = Plane::start("binding");
    p.ok_in(
        &["apply", "-f", "-"],
        Some(&pod(
            "p",
            json!({}),
            json!({"spec": {"schedulerName": "manual"}}),
        )),
    );
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
        "target": {"kind": "Node", "name": "somewhere"}});
    let file = p.dir.join("binding.json");
    std::fs::write(&file, binding.to_string()).expect("write");
    let raw = [
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/p/binding",
        "-f",
        file.to_str().expect("path"),
    ];
    p.ok(&raw);
    assert_eq!(p.get(&["pod", "p"], "{.spec.nodeName}"), "somewhere");
    assert_eq!(scheduled_condition(&p, "p"), "True  ");
    let out = p.kubectl(&raw, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already assigned to node \"somewhere\""),
        "{err}"
    );
    // A binding without a target names the field and changes nothing.
    std::fs::write(
        &file,
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "q"}, "target": {}})
            .to_string(),
    )
    .expect("write");
    p.ok_in(
        &["apply", "-f", "-"],
        Some(&pod(
            "q",
            json!({}),
            json!({"spec": {"schedulerName": "manual"}}),
        )),
    );
    let out = p.kubectl(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/q/binding",
            "-f",
            file.to_str().expect("path"),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("target.name"),
        "{err}"
    );
    assert_eq!(p.get(&["pod", "q"], "{.spec.nodeName}"), "");
}
