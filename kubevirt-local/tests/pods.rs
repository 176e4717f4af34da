//! Pods as containers on the local node: the real `kubevirt-local up` (API server + kubelet), a
//! private containerd it starts, images built here and served by Debian's `docker-registry` on
//! 127.0.0.1, driven by the real kubectl. Needs root and the containerd, runc, CNI plugins,
//! busybox-static and docker-registry packages; skips (saying why) without them.
//!
//! Each test's node has a pod network of its own (its slot's bridge and CIDR).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::node::*;
use kubevirt_testsupport::tempdir;
use serde_json::Value;

#[test]
fn a_pod_runs_gets_an_ip_and_serves_http_to_the_host() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("pods-http");
    let up = start_up(&dir, "kv-pods-http", &im);
    up.run_pod(&pod_yaml(
        "web",
        &im.busybox,
        "mkdir -p /www && echo hello-from-$POD_NAME > /www/index.html && exec httpd -f -p 8080 -h /www",
        "",
    ).replace(
        "    command:",
        "    env:\n    - name: POD_NAME\n      valueFrom: {fieldRef: {fieldPath: metadata.name}}\n    command:",
    ));
    let pod = running_pod(&up, "web");
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with(&common::slot::network().prefix), "{ip}");
    let cs = &pod["status"]["containerStatuses"][0];
    assert!(
        cs["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{cs}"
    );
    assert!(
        cs["imageID"].as_str().unwrap().starts_with("sha256:")
            || cs["imageID"].as_str().unwrap().contains("@sha256:"),
        "{cs}"
    );
    assert_eq!(cs["ready"], true);
    assert!(pod["status"]["hostIP"].is_string());
    let body = eventually("httpd answers from the pod IP", 30, || {
        http_get(&ip, 8080, "/")
    });
    assert_eq!(body.trim(), "hello-from-web");

    // The node is there, Ready, with the KubeVirt devices.
    let node: Value =
        serde_json::from_str(&up.ok(&["get", "node", "kv-pods-http", "-o", "json"], None)).unwrap();
    assert_eq!(
        node["metadata"]["labels"]["kubevirt.io/schedulable"],
        "true"
    );
    assert!(
        node["status"]["capacity"]["devices.kubevirt.io/kvm"].is_string(),
        "{node}"
    );
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True");
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    up.ok(
        &["get", "lease", "-n", "kube-node-lease", "kv-pods-http"],
        None,
    );

    up.ok(
        &["delete", "pod", "web", "--wait=true", "--timeout=60s"],
        None,
    );
    assert_nothing_left(&dir);
}

fn container_status(pod: &Value) -> Value {
    pod["status"]["containerStatuses"][0].clone()
}

#[test]
fn a_crash_looping_container_restarts_with_back_off_and_a_missing_image_backs_off() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("pods-crash");
    let up = start_up(&dir, "kv-pods-crash", &im);
    up.run_pod(&pod_yaml("crash", &im.busybox, "echo starting; exit 3", ""));
    let missing = format!("{}/test/does-not-exist:1", im.registry.address());
    up.run_pod(&pod_yaml("noimage", &missing, "true", ""));
    up.run_pod(&pod_yaml(
        "once",
        &im.busybox,
        "exit 0",
        "restartPolicy: Never",
    ));

    let crash = eventually("crash in CrashLoopBackOff after a restart", 90, || {
        up.pod("crash").filter(|p| {
            let cs = container_status(p);
            cs["restartCount"].as_u64().unwrap_or(0) >= 1
                && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        })
    });
    let cs = container_status(&crash);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3, "{cs}");
    assert_eq!(crash["status"]["phase"], "Running");

    // Its logs, current and previous, from the kubelet's endpoint the Node publishes.
    let node: Value =
        serde_json::from_str(&up.ok(&["get", "node", "kv-pods-crash", "-o", "json"], None))
            .unwrap();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap() as u16;
    assert_ne!(port, 0);
    let logs = http_get(
        "127.0.0.1",
        port,
        "/containerLogs/default/crash/main?tailLines=1",
    )
    .unwrap();
    assert_eq!(logs, "starting\n");
    let previous = http_get(
        "127.0.0.1",
        port,
        "/containerLogs/default/crash/main?previous=true",
    )
    .unwrap();
    assert_eq!(previous, "starting\n");
    assert!(http_get("127.0.0.1", port, "/containerLogs/default/crash/nope").is_none());

    let seen_err = eventually("noimage ErrImagePull", 60, || {
        up.pod("noimage")
            .filter(|p| container_status(p)["state"]["waiting"]["reason"] == "ErrImagePull")
    });
    assert!(
        container_status(&seen_err)["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("does-not-exist")
    );
    eventually("noimage ImagePullBackOff", 60, || {
        up.pod("noimage")
            .filter(|p| container_status(p)["state"]["waiting"]["reason"] == "ImagePullBackOff")
    });
    assert_eq!(up.pod("noimage").unwrap()["status"]["phase"], "Pending");

    let once = eventually("once Succeeded", 60, || {
        up.pod("once")
            .filter(|p| p["status"]["phase"] == "Succeeded")
    });
    assert_eq!(
        container_status(&once)["state"]["terminated"]["reason"],
        "Completed"
    );

    // An unsupported volume is refused in the status, naming the field.
    up.run_pod(&pod_yaml(
        "nfs",
        &im.busybox,
        "true",
        "volumes: [{name: data, nfs: {server: x, path: /}}]",
    ));
    let nfs = eventually("nfs refused", 60, || {
        up.pod("nfs").filter(|p| p["status"]["phase"] == "Failed")
    });
    assert!(
        nfs["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.volumes[0]"),
        "{}",
        nfs["status"]
    );

    // The up process is still there (nothing crashed).
    up.ok(&["get", "pods"], None);
    up.ok(
        &[
            "delete",
            "pod",
            "crash",
            "noimage",
            "once",
            "nfs",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert_nothing_left(&dir);
}

/// A pod whose containers all run is not polled every second; the kubelet's relist of the
/// runtime notices a container that ends and wakes the pod's worker, which restarts it at once
/// (the steady pods' own resync is 20 s).
#[test]
fn a_steady_pods_container_that_ends_is_restarted_at_once() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("pods-steady");
    let up = start_up(&dir, "kv-pods-steady", &im);
    up.run_pod(&pod_yaml(
        "steady",
        &im.busybox,
        "while [ ! -e /tmp/stop ]; do sleep 1; done; exit 3",
        "",
    ));
    running_pod(&up, "steady");
    // A few passes later its worker has nothing left to do.
    std::thread::sleep(Duration::from_secs(4));
    let start = Instant::now();
    up.ok(&["exec", "steady", "--", "touch", "/tmp/stop"], None);
    let restarted = eventually("steady restarted", 60, || {
        up.pod("steady").filter(|p| {
            let cs = container_status(p);
            cs["restartCount"].as_u64().unwrap_or(0) >= 1 && cs["state"]["running"].is_object()
        })
    });
    let took = start.elapsed();
    let cs = container_status(&restarted);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3, "{cs}");
    assert!(
        took < Duration::from_secs(10),
        "the ended container was restarted {took:?} after it was told to end"
    );
    up.ok(
        &["delete", "pod", "steady", "--grace-period=0", "--force"],
        None,
    );
    assert_nothing_left(&dir);
}

#[test]
fn graceful_and_forced_deletion() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("pods-delete");
    let up = start_up(&dir, "kv-pods-delete", &im);
    // Traps SIGTERM and says so in a file on a hostPath volume the test reads.
    let seen = dir.join("seen");
    std::fs::create_dir_all(&seen).unwrap();
    let vol = format!(
        "volumes: [{{name: seen, hostPath: {{path: {}}}}}]",
        seen.display()
    );
    let graceful = pod_yaml(
        "graceful",
        &im.busybox,
        "trap 'echo term > /seen/graceful; exit 0' TERM; while :; do sleep 1; done",
        &vol,
    )
    .replace(
        "    command:",
        "    volumeMounts: [{name: seen, mountPath: /seen}]\n    command:",
    );
    up.run_pod(&graceful);
    up.run_pod(&pod_yaml("forced", &im.busybox, "exec sleep 1000", ""));
    running_pod(&up, "graceful");
    running_pod(&up, "forced");

    let start = Instant::now();
    up.ok(&["delete", "pod", "graceful", "--wait=false"], None);
    // While it terminates the object stays, marked for deletion with its grace period.
    let p = up
        .pod("graceful")
        .expect("a terminating pod is still there");
    assert!(
        p["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        p["metadata"]
    );
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 5);
    eventually("graceful is gone", 60, || {
        up.pod("graceful").is_none().then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(seen.join("graceful"))
            .unwrap()
            .trim(),
        "term"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the trap exits at once: {:?}",
        start.elapsed()
    );

    up.ok(
        &["delete", "pod", "forced", "--grace-period=0", "--force"],
        None,
    );
    assert!(up.pod("forced").is_none());
    assert_nothing_left(&dir);
}

#[test]
fn kill_9_of_up_leaves_the_pod_running_and_a_restart_adopts_it() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("pods-adopt");
    let up = start_up(&dir, "kv-pods-adopt", &im);
    up.run_pod(&pod_yaml("stays", &im.busybox, "exec sleep 100000", ""));
    let before = running_pod(&up, "stays");
    let id = container_status(&before)["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let data = up.kill9();

    // The container keeps running without `up`.
    let socket = data.join("node/containerd/containerd.sock");
    let tasks = Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["--namespace", "k8s.io", "tasks", "list"])
        .output()
        .unwrap();
    let short = id.trim_start_matches("containerd://");
    let listing = String::from_utf8_lossy(&tasks.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(short) && l.contains("RUNNING")),
        "{listing}"
    );

    let up = start_up(&data, "kv-pods-adopt", &im);
    // Still Running on the same container after the new kubelet looked at it.
    std::thread::sleep(Duration::from_secs(3));
    let after = running_pod(&up, "stays");
    let cs = container_status(&after);
    assert_eq!(cs["containerID"].as_str().unwrap(), id);
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"]);

    up.ok(
        &[
            "delete",
            "pod",
            "stays",
            "--grace-period=1",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert_nothing_left(&dir);
}
