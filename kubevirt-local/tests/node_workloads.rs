//! The whole local node end to end, as a user drives it: pods created without a node are placed
//! by the scheduler and run by the kubelet; `kubectl logs` reads them through the API server; a
//! Deployment of real containers scales and rolls; pods reach each other; deleting everything
//! leaves nothing on the host.

mod common;

use std::time::Duration;

use common::node::*;
use kubevirt_testsupport::tempdir;

/// A shell loop that leaves at once on SIGTERM (busybox `sh` as pid 1 ignores it otherwise).
const SERVE: &str = "trap 'exit 0' TERM; echo started-$HOSTNAME; while true; do sleep 1; done";

fn phase_of(up: &Up, name: &str) -> Option<String> {
    up.pod(name)
        .and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
}

#[test]
fn scheduled_pods_run_log_scale_roll_and_reach_each_other() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("node-workloads");
    let up = start_up(&dir, "kv-node-workloads", &im);

    // A bare pod with no node: the scheduler binds it, the kubelet runs it.
    up.ok(
        &[
            "run",
            "web",
            "--image",
            &im.busybox,
            "--restart=Never",
            "--command",
            "--",
            "/bin/sh",
            "-c",
            "mkdir -p /www && echo hello > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www",
        ],
        None,
    );
    let web = running_pod(&up, "web");
    assert_eq!(web["spec"]["nodeName"], "kv-node-workloads");
    let scheduled = web["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap();
    assert_eq!(scheduled["status"], "True", "{web}");
    let web_ip = web["status"]["podIP"].as_str().unwrap().to_string();

    // kubectl logs through the API server's proxy to the kubelet.
    let logs = eventually("web's log", 30, || {
        let l = up.ok(&["logs", "web"], None);
        l.contains("serving").then_some(l)
    });
    assert_eq!(logs.trim(), "serving");
    let tail = up.ok(&["logs", "web", "--tail=1", "-c", "web"], None);
    assert_eq!(tail.trim(), "serving");
    let wrong = up.kubectl(&["logs", "web", "-c", "nosuch"], None);
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("container nosuch is not valid for pod web"),
        "{err}"
    );

    // kubectl exec over websockets: output, stderr apart, the exit code.
    let host = up.ok(&["exec", "web", "--", "hostname"], None);
    assert_eq!(host.trim(), "web");
    let out = up.kubectl(
        &[
            "exec",
            "web",
            "--",
            "/bin/sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "to-out");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("to-err"),
        "{out:?}"
    );
    let piped = up.ok(&["exec", "web", "--", "cat", "/www/index.html"], None);
    assert_eq!(piped.trim(), "hello");

    // Pod to pod: a one-shot pod pings web and fetches its page over the pod network.
    up.ok(
        &[
            "run",
            "fetch",
            "--image",
            &im.busybox,
            "--restart=Never",
            "--command",
            "--",
            "/bin/sh",
            "-c",
            // busybox-static's wget resolves through glibc's NSS and crashes in an empty root; nc
            // takes the address as it is.
            &format!(
                "ping -c 1 -W 5 {web_ip} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {web_ip} 8080"
            ),
        ],
        None,
    );
    let phase = eventually("fetch finished", 90, || {
        phase_of(&up, "fetch").filter(|p| p == "Succeeded" || p == "Failed")
    });
    let fetched = up.ok(&["logs", "fetch"], None);
    assert_eq!(phase, "Succeeded", "fetch's log:\n{fetched}");
    assert!(fetched.contains("hello"), "{fetched}");

    // A Deployment of real containers: 3, scaled to 5, then rolled to a new template.
    up.ok(
        &[
            "create",
            "deployment",
            "d",
            "--image",
            &im.busybox,
            "--replicas=3",
            "--",
            "/bin/sh",
            "-c",
            SERVE,
        ],
        None,
    );
    up.ok(
        &["rollout", "status", "deployment/d", "--timeout=180s"],
        None,
    );
    assert_eq!(up.list("pods", "app=d").len(), 3);
    up.ok(&["scale", "deployment/d", "--replicas=5"], None);
    up.ok(
        &["rollout", "status", "deployment/d", "--timeout=180s"],
        None,
    );
    let pods = up.list("pods", "app=d");
    assert_eq!(pods.len(), 5);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        assert!(p["status"]["podIP"].is_string(), "{p}");
    }
    up.ok(&["set", "env", "deployment/d", "ROLLED=1"], None);
    up.ok(
        &["rollout", "status", "deployment/d", "--timeout=240s"],
        None,
    );
    let rolled = eventually("5 rolled pods", 120, || {
        let pods = up.list("pods", "app=d");
        let all_new = pods.len() == 5
            && pods.iter().all(|p| {
                p["status"]["phase"] == "Running"
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && p["spec"]["containers"][0]["env"]
                        .as_array()
                        .is_some_and(|e| e.iter().any(|v| v["name"] == "ROLLED"))
            });
        all_new.then_some(pods)
    });
    let first = rolled[0]["metadata"]["name"].as_str().unwrap().to_string();
    let log = up.ok(&["logs", &first], None);
    assert!(log.starts_with("started-"), "{log}");

    // Deleting everything stops every container and leaves nothing on the host.
    up.ok(
        &["delete", "deployment", "d", "--wait=true", "--timeout=120s"],
        None,
    );
    up.ok(
        &[
            "delete",
            "pod",
            "web",
            "fetch",
            "--wait=true",
            "--timeout=120s",
        ],
        None,
    );
    eventually("the deployment's pods gone", 120, || {
        up.list("pods", "app=d").is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_nothing_left(&dir);
    // `up --stop-pods-on-exit` stops containerd and removes the pod bridge CNI made.
    drop(up);
    let bridge = common::slot::network().bridge;
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists(),
        "the pod bridge {bridge} outlived up --stop-pods-on-exit"
    );
}
