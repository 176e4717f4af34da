//! Container probes on the local node (issue 13), against the real `kubevirt-local up` and
//! kubectl: a readiness probe holds the container and the pod unready until it passes and takes
//! them out when it fails; a failing liveness probe gets the container killed and restarted with
//! upstream's events; HTTP and TCP probes reach the pod's own server.

mod common;

use common::node::*;
use kubevirt_testsupport::tempdir;
use serde_json::Value;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: IMAGE
    command: ["/bin/sh", "-c", "sleep 4; touch /tmp/ready; exec sleep 3600"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      exec: {command: ["/bin/sh", "-c", "test ! -f /tmp/dead"]}
      periodSeconds: 1
      failureThreshold: 2
  - name: web
    image: IMAGE
    command: ["/bin/sh", "-c", "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"]
    ports:
    - {name: http, containerPort: 8080}
    startupProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 1
"#;

fn status_of<'a>(pod: &'a Value, container: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .unwrap_or(&Value::Null)
}

fn condition(pod: &Value, type_: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn event_messages(up: &Up, reason: &str) -> Vec<String> {
    let events: Value =
        serde_json::from_str(&up.ok(&["get", "events", "-o", "json"], None)).unwrap();
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "probed" && e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

#[test]
fn probes_gate_readiness_and_restart_unhealthy_containers() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("pods-probes");
    let up = start_up(&dir, "kv-probes", &im);
    up.run_pod(&POD.replace("IMAGE", &im.busybox));

    // Running but not ready until the readiness file exists (the app sleeps 4 s first).
    let early = eventually("the pod runs", 60, || {
        up.pod("probed")
            .filter(|p| status_of(p, "app")["state"]["running"].is_object())
    });
    assert_eq!(status_of(&early, "app")["ready"], false, "{early}");
    assert_eq!(condition(&early, "Ready"), "False");

    // Both containers become ready: the exec probe finds the file, the HTTP probe gets 200
    // from httpd once the TCP startup probe has connected.
    let ready = eventually("both containers are ready", 60, || {
        up.pod("probed").filter(|p| condition(p, "Ready") == "True")
    });
    assert_eq!(status_of(&ready, "web")["started"], true);
    assert_eq!(status_of(&ready, "app")["ready"], true);
    let table = up.ok(&["get", "pod", "probed"], None);
    assert!(table.contains("2/2"), "{table}");

    // The readiness file goes: the container and the pod are unready, with an Unhealthy event.
    up.ok(
        &["exec", "probed", "-c", "app", "--", "rm", "/tmp/ready"],
        None,
    );
    let unready = eventually("the app is unready", 30, || {
        up.pod("probed")
            .filter(|p| status_of(p, "app")["ready"] == false)
    });
    assert_eq!(condition(&unready, "Ready"), "False");
    assert_eq!(status_of(&unready, "app")["restartCount"], 0);
    let failed = eventually("an Unhealthy event", 30, || {
        let m = event_messages(&up, "Unhealthy");
        m.iter()
            .any(|m| m.starts_with("Readiness probe failed:"))
            .then_some(m)
    });
    assert!(
        failed.iter().any(|m| m.contains("/tmp/ready")),
        "the probe's output is in the event: {failed:?}"
    );

    // Liveness fails twice in a row: the container is killed and restarted (a fresh file
    // system: the app becomes ready again on its own).
    up.ok(
        &["exec", "probed", "-c", "app", "--", "touch", "/tmp/dead"],
        None,
    );
    let restarted = eventually("the app is restarted", 60, || {
        up.pod("probed")
            .filter(|p| status_of(p, "app")["restartCount"] == 1)
    });
    assert_eq!(status_of(&restarted, "web")["restartCount"], 0);
    let killing = event_messages(&up, "Killing");
    assert!(
        killing
            .iter()
            .any(|m| m == "Container app failed liveness probe, will be restarted"),
        "{killing:?}"
    );
    eventually("the restarted app is ready again", 60, || {
        up.pod("probed").filter(|p| condition(p, "Ready") == "True")
    });

    up.ok(&["delete", "pod", "probed", "--wait=true"], None);
    drop(up);
    assert_nothing_left(&dir);
}
