//! `kubevirt-local up --bare` (issue 18 part 4), as a user starts it before installing KubeVirt
//! with its operator: the API server and the node serve, with none of KubeVirt's components (no
//! kubevirt.io API, no KubeVirt readiness gate), and a Deployment of an image from the node's
//! registry becomes available; the ready file is written once it is all ready.
//!
//! Needs root, containerd, runc, the CNI plugins and busybox-static (see `common::node`).

mod common;

use common::node::*;
use kubevirt_testsupport::tempdir;

const NODE: &str = "kv-up-bare";

fn deployment(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: {image}
        command: ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    )
}

#[test]
fn bare_up_serves_the_node_without_kubevirt() {
    require_node!();
    let _node = node_slot();
    let dir = tempdir("up-bare");
    let ready_file = dir.join("ready.json");
    let ready_arg = ready_file.to_string_lossy().into_owned();
    let (up, ready, image) = start_up_busybox(
        &dir,
        NODE,
        &["sh", "sleep"],
        &["--bare", "--ready-file", &ready_arg],
    );
    let data = up.data.clone();

    // Ready: the file says what the line said; no node agent, so no VMI launchers.
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ready_file).expect("the ready file")).unwrap();
    assert_eq!(file, ready);
    assert!(ready["vmiLaunchers"].is_null(), "{ready}");
    let readyz = up.ok(&["get", "--raw", "/readyz?verbose"], None);
    assert!(
        !readyz.contains("kubevirt-crds-established")
            && readyz.contains("[+]poststarthook/kubevirt-controllers ok")
            && readyz.ends_with("readyz check passed\n"),
        "{readyz}"
    );

    // None of KubeVirt's (or CDI's) APIs; the node's own are there.
    let resources = up.ok(&["api-resources"], None);
    assert!(!resources.contains("kubevirt.io"), "{resources}");
    for kind in [
        "Deployment",
        "DaemonSet",
        "Job",
        "VolumeSnapshot",
        "StorageClass",
    ] {
        assert!(resources.contains(kind), "{kind}: {resources}");
    }
    let crds = up.ok(&["get", "crd", "-o", "name"], None);
    assert!(!crds.contains("kubevirt.io"), "{crds}");
    let vm = up.kubectl(&["get", "vm"], None);
    assert!(!vm.status.success(), "no VirtualMachine resource");

    // The node runs a Deployment of the registry's image.
    up.ok(&["apply", "-f", "-"], Some(&deployment(&image)));
    up.ok(
        &[
            "wait",
            "deployment/web",
            "--for=condition=Available",
            "--timeout=120s",
        ],
        None,
    );
    eventually("both replicas available", 120, || {
        up.get("deployment", "web")
            .filter(|d| d["status"]["availableReplicas"] == 2)
    });
    let pods = up.ok(&["get", "pods", "-l", "app=web", "-o", "wide"], None);
    assert_eq!(pods.matches("Running").count(), 2, "{pods}");
    assert_eq!(pods.matches(NODE).count(), 2, "{pods}");

    drop(up);
    assert!(!ready_file.exists(), "a clean stop removes the ready file");
    assert_nothing_left(&data);
}
