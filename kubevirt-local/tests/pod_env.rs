//! A container's environment from the API, through the real kubectl against `kubevirt-local up`
//! (images from the node's own registry): `envFrom` a ConfigMap (with a prefix) and a Secret,
//! `valueFrom` configMapKeyRef, secretKeyRef and fieldRef (name, namespace, pod IP); a
//! container naming a ConfigMap that does not exist yet waits with CreateContainerConfigError
//! and starts once it is created. Needs root and the containerd, runc, CNI plugins and
//! busybox-static packages.

mod common;

use common::node::*;
use kubevirt_testsupport::tempdir;

const SOURCES: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  GREETING: hello
  TWO: "2"
---
apiVersion: v1
kind: Secret
metadata:
  name: sec
data:
  password: aHVudGVyMg==
"#;

#[test]
fn env_comes_from_config_maps_secrets_and_the_pod_itself() {
    require_node!();
    let _node = node_slot();
    let dir = tempdir("pod-env");
    let tools = ["sh", "env", "sort", "sleep", "cat"];
    let (up, _, image) = start_up_busybox(&dir, "kv-pod-env", &tools, &["--no-node"]);
    up.ok(&["apply", "-f", "-"], Some(SOURCES));

    let env = r#"
    envFrom:
    - configMapRef: {name: cfg}
      prefix: CM_
    - secretRef: {name: sec}
    - configMapRef: {name: nowhere, optional: true}
    env:
    - {name: NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: KEY, valueFrom: {configMapKeyRef: {name: cfg, key: GREETING}}}
    - {name: PASS, valueFrom: {secretKeyRef: {name: sec, key: password}}}
    - {name: MAYBE, valueFrom: {secretKeyRef: {name: sec, key: nope, optional: true}}}
    - {name: JOINED, value: "$(KEY)-$(CM_TWO)"}
    command:"#;
    up.run_pod(
        &pod_yaml("env-pod", &image, "env | sort; sleep 3600", "").replace("\n    command:", env),
    );
    let pod = running_pod(&up, "env-pod");
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let logs = eventually("env-pod's environment in its log", 30, || {
        let l = up.ok(&["logs", "env-pod"], None);
        l.contains("NAME=").then_some(l)
    });
    let lines: Vec<&str> = logs.lines().collect();
    for want in [
        "CM_GREETING=hello",
        "CM_TWO=2",
        "password=hunter2",
        "NAME=env-pod",
        "NS=default",
        &format!("IP={ip}"),
        "KEY=hello",
        "PASS=hunter2",
        "JOINED=hello-2",
    ] {
        assert!(lines.contains(&want), "{want} missing in:\n{logs}");
    }
    assert!(!logs.contains("MAYBE="), "{logs}");

    // A ConfigMap that is not there yet: the container waits, then starts once it exists.
    let waits = r#"
    env:
    - {name: LATE, valueFrom: {configMapKeyRef: {name: late, key: k}}}
    command:"#;
    up.run_pod(
        &pod_yaml("late-pod", &image, "echo LATE=$LATE; sleep 3600", "")
            .replace("\n    command:", waits),
    );
    let waiting = eventually("late-pod waiting on its ConfigMap", 60, || {
        let p = up.pod("late-pod")?;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("configmap \"late\" not found")
            && message.contains("spec.containers[0].env[0].valueFrom.configMapKeyRef"),
        "{waiting}"
    );
    up.ok(
        &["create", "configmap", "late", "--from-literal=k=finally"],
        None,
    );
    running_pod(&up, "late-pod");
    let logs = eventually("late-pod's output", 30, || {
        let l = up.ok(&["logs", "late-pod"], None);
        l.contains("LATE=").then_some(l)
    });
    assert_eq!(logs.trim(), "LATE=finally");

    up.ok(
        &["delete", "pod", "env-pod", "late-pod", "--grace-period=1"],
        None,
    );
    assert_nothing_left(&dir.join("data"));
}
