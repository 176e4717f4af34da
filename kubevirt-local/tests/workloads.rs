//! The workload controllers with the real kubectl against `up --no-node --no-kubelet`. No kubelet runs here,
//! so a stand-in does what a kubelet's status updates would: every bound pod is marked Running
//! and Ready through `pods/status` (`kubectl patch --subresource=status`), a little after it is
//! bound, so the controllers see pods come up the way they do on a node.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::plane::Plane;
use kubevirt_testsupport::eventually;
use serde_json::{Value, json};

fn pods(p: &Plane, selector: &str) -> Vec<Value> {
    let out = p.ok(&["get", "pods", "-l", selector, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The kubelet stand-in: marks bound pods Running and Ready until dropped.
struct FakeKubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelet {
    fn start(kubeconfig: std::path::PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let out = kubevirt_testsupport::kubectl(
                    &kubeconfig,
                    &["get", "pods", "-A", "-o", "json"],
                    None,
                );
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                for pod in v["items"].as_array().into_iter().flatten() {
                    let bound = pod["spec"]["nodeName"]
                        .as_str()
                        .is_some_and(|n| !n.is_empty());
                    if !bound || ready(pod) || pod["metadata"]["deletionTimestamp"].is_string() {
                        continue;
                    }
                    let status = json!({"status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"},
                        {"type": "ContainersReady", "status": "True"}]}});
                    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    kubevirt_testsupport::kubectl(
                        &kubeconfig,
                        &[
                            "-n",
                            ns,
                            "patch",
                            "pod",
                            name,
                            "--subresource=status",
                            "--type=merge",
                            "-p",
                            &status.to_string(),
                        ],
                        None,
                    );
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn nodes(p: &Plane, names: &[&str]) {
    for n in names {
        p.node(
            n,
            json!({"cpu": "16", "memory": "32Gi", "pods": "110"}),
            json!({}),
        );
    }
}

fn count_ready<'a>(p: &'a Plane, selector: &str, want: usize) -> impl FnMut() -> Option<()> + 'a {
    let selector = selector.to_string();
    move || {
        let ps = pods(p, &selector);
        (ps.len() == want && ps.iter().all(ready)).then_some(())
    }
}

#[test]
fn a_deployment_scales_rolls_and_rolls_back() {
    let p = Plane::start("deployment");
    nodes(&p, &["node-a", "node-b"]);
    let _kubelet = FakeKubelet::start(p.kubeconfig.clone());

    p.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ]);
    eventually("3 ready pods", count_ready(&p, "app=web", 3));
    let pod = &pods(&p, "app=web")[0];
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["controller"].as_bool(),
            owner["blockOwnerDeletion"].as_bool()
        ),
        (Some("ReplicaSet"), Some(true), Some(true))
    );
    let rs = p.get(&["rs", "-l", "app=web"], "{.items[*].metadata.name}");
    assert!(rs.starts_with("web-"), "{rs}");
    assert_eq!(p.get(&["rs", &rs], "{.metadata.ownerReferences[0].kind} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"), "Deployment 1");
    let out = p.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(p.get(&["deploy", "web"], "{.status.replicas} {.status.readyReplicas} {.status.availableReplicas} {.status.updatedReplicas}"), "3 3 3 3");

    let table = p.ok(&["get", "deploy", "web"]);
    assert!(
        table.contains("UP-TO-DATE") && table.contains("AVAILABLE"),
        "{table}"
    );
    p.ok(&["scale", "deployment", "web", "--replicas=5"]);
    eventually("5 ready pods", count_ready(&p, "app=web", 5));

    // Roll a new image with maxSurge 1 / maxUnavailable 1, watching that never fewer than 4 pods
    // are ready and never more than 6 exist.
    p.ok(&["patch", "deployment", "web", "--type=merge", "-p",
        r#"{"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1,"maxUnavailable":1}}}}"#]);
    let (min_ready, max_total) = (
        Arc::new(AtomicI64::new(i64::MAX)),
        Arc::new(AtomicI64::new(0)),
    );
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (kc, min_ready, max_total, watching) = (
            p.kubeconfig.clone(),
            min_ready.clone(),
            max_total.clone(),
            watching.clone(),
        );
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let out = kubevirt_testsupport::kubectl(
                    &kc,
                    &["get", "pods", "-l", "app=web", "-o", "json"],
                    None,
                );
                if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                    let items = v["items"].as_array().cloned().unwrap_or_default();
                    let live: Vec<&Value> = items
                        .iter()
                        .filter(|p| !p["metadata"]["deletionTimestamp"].is_string())
                        .collect();
                    let r = live.iter().filter(|p| ready(p)).count() as i64;
                    min_ready.fetch_min(r, Ordering::Relaxed);
                    max_total.fetch_max(live.len() as i64, Ordering::Relaxed);
                }
            }
        })
    };
    p.ok(&["set", "image", "deployment/web", "busybox=busybox:1.36"]);
    let out = p.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    watching.store(false, Ordering::Relaxed);
    monitor.join().expect("monitor");
    assert!(out.contains("successfully rolled out"), "{out}");
    let (lo, hi) = (
        min_ready.load(Ordering::Relaxed),
        max_total.load(Ordering::Relaxed),
    );
    assert!(lo >= 4, "maxUnavailable 1 of 5: at least 4 ready, saw {lo}");
    assert!(hi <= 6, "maxSurge 1 of 5: at most 6 pods, saw {hi}");
    eventually("5 new ready pods", count_ready(&p, "app=web", 5));
    let images: Vec<String> = pods(&p, "app=web")
        .iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(images.iter().all(|i| i == "busybox:1.36"), "{images:?}");
    assert_eq!(
        p.get(
            &["deploy", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "2"
    );

    let events = p.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=ScalingReplicaSet",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("Scaled up replica set web-")
            && events.contains("Scaled down replica set web-"),
        "{events}"
    );
    let history = p.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    p.ok(&["rollout", "undo", "deployment/web"]);
    p.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    eventually("rolled back to busybox", || {
        let ps = pods(&p, "app=web");
        (ps.len() == 5
            && ps
                .iter()
                .all(|p| ready(p) && p["spec"]["containers"][0]["image"] == "busybox"))
        .then_some(())
    });
    assert_eq!(
        p.get(
            &["deploy", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );
    assert_eq!(
        p.get(
            &["deploy", "web"],
            "{.status.conditions[?(@.type==\"Available\")].status}"
        ),
        "True"
    );

    // Deleting the Deployment collects its ReplicaSets and their pods through the owner refs.
    p.ok(&["delete", "deployment", "web"]);
    eventually("replica sets and pods collected", || {
        let rs = p.get(&["rs", "-l", "app=web"], "{.items[*].metadata.name}");
        (rs.is_empty() && pods(&p, "app=web").is_empty()).then_some(())
    });
}

#[test]
fn recreate_stops_old_pods_before_starting_new_ones() {
    let p = Plane::start("recreate");
    nodes(&p, &["node-a"]);
    let _kubelet = FakeKubelet::start(p.kubeconfig.clone());
    p.ok(&[
        "create",
        "deployment",
        "db",
        "--image=busybox",
        "--replicas=2",
    ]);
    p.ok(&[
        "patch",
        "deployment",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
    ]);
    eventually("2 ready pods", count_ready(&p, "app=db", 2));
    p.ok(&["set", "image", "deployment/db", "busybox=busybox:1.36"]);
    p.ok(&["rollout", "status", "deployment/db", "--timeout=60s"]);
    eventually("2 new ready pods", || {
        let ps = pods(&p, "app=db");
        (ps.len() == 2
            && ps
                .iter()
                .all(|p| ready(p) && p["spec"]["containers"][0]["image"] == "busybox:1.36"))
        .then_some(())
    });
}

#[test]
fn a_replica_set_adopts_matching_orphans_and_releases_relabelled_pods() {
    let p = Plane::start("replicaset");
    let orphan = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "cache"}},
        "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "busybox"}]}});
    p.ok_in(&["apply", "-f", "-"], Some(&orphan.to_string()));
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "cache"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "cache"}},
            "template": {"metadata": {"labels": {"app": "cache"}},
                "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "busybox"}]}}}});
    p.ok_in(&["apply", "-f", "-"], Some(&rs.to_string()));
    eventually("2 pods, the orphan adopted", || {
        let ps = pods(&p, "app=cache");
        (ps.len() == 2).then_some(())
    });
    assert_eq!(
        p.get(&["pod", "orphan"], "{.metadata.ownerReferences[0].name}"),
        "cache"
    );
    assert_eq!(p.get(&["rs", "cache"], "{.status.replicas}"), "2");
    // Relabel the orphan: it is released and replaced.
    p.ok(&["label", "pod", "orphan", "app=other", "--overwrite"]);
    eventually("released and replaced", || {
        let released = p
            .get(&["pod", "orphan"], "{.metadata.ownerReferences}")
            .is_empty();
        (released && pods(&p, "app=cache").len() == 2).then_some(())
    });
}

#[test]
fn a_daemon_set_runs_one_pod_per_node() {
    let p = Plane::start("daemonset");
    nodes(&p, &["node-a", "node-b"]);
    let _kubelet = FakeKubelet::start(p.kubeconfig.clone());
    let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    p.ok_in(&["apply", "-f", "-"], Some(&ds.to_string()));
    let on_nodes = |want: usize| {
        let p = &p;
        move || {
            let ps = pods(p, "app=agent");
            let mut nodes: Vec<String> = ps
                .iter()
                .filter(|p| ready(p))
                .map(|p| {
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            nodes.sort();
            nodes.dedup();
            (ps.len() == want && nodes.len() == want).then_some(nodes)
        }
    };
    assert_eq!(
        eventually("a pod on each of 2 nodes", on_nodes(2)),
        ["node-a", "node-b"]
    );
    let affinity = p.get(&["pods", "-l", "app=agent"], "{.items[0].spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key}");
    assert_eq!(affinity, "metadata.name");
    nodes(&p, &["node-c"]);
    assert_eq!(
        eventually("and on the new node", on_nodes(3)),
        ["node-a", "node-b", "node-c"]
    );
    eventually("status counts them", || {
        (p.get(
            &["ds", "agent"],
            "{.status.desiredNumberScheduled} {.status.numberReady}",
        ) == "3 3")
            .then_some(())
    });
    // A node the template's selector excludes loses its pod.
    p.ok(&[
        "patch",
        "ds",
        "agent",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":"node-a"}}}}}"#,
    ]);
    // (Polled until it is node-a's: mid-sync, the last pod standing may be another node's.)
    let one = on_nodes(1);
    eventually("only node-a is left", || one().filter(|n| n == &["node-a"]));
}

/// Mark every pod `selector` selects as finished with `phase`, as a kubelet reports it.
fn finish_pods(p: &Plane, selector: &str, phase: &str) -> usize {
    let mut n = 0;
    for pod in pods(p, selector) {
        if pod["status"]["phase"] == phase {
            continue;
        }
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let status = json!({"status": {"phase": phase}});
        p.ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
        n += 1;
    }
    n
}

#[test]
fn jobs_complete_or_fail_by_their_pods() {
    let p = Plane::start("jobs");
    p.ok(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]);
    eventually("the job's pod", || {
        (pods(&p, "batch.kubernetes.io/job-name=once").len() == 1).then_some(())
    });
    assert_eq!(p.get(&["job", "once"], "{.status.active}"), "1");
    assert_eq!(
        finish_pods(&p, "batch.kubernetes.io/job-name=once", "Succeeded"),
        1
    );
    p.ok(&[
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=30s",
    ]);
    assert_eq!(
        p.get(&["job", "once"], "{.status.succeeded} {.status.active}"),
        "1 0"
    );

    // Three completions, two at a time.
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "three"},
        "spec": {"completions": 3, "parallelism": 2, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
    p.ok_in(&["apply", "-f", "-"], Some(&job.to_string()));
    let sel = "batch.kubernetes.io/job-name=three";
    eventually("two running", || (pods(&p, sel).len() == 2).then_some(()));
    finish_pods(&p, sel, "Succeeded");
    eventually("the third", || (pods(&p, sel).len() == 3).then_some(()));
    finish_pods(&p, sel, "Succeeded");
    p.ok(&[
        "wait",
        "--for=condition=complete",
        "job/three",
        "--timeout=30s",
    ]);
    assert_eq!(pods(&p, sel).len(), 3, "no pod beyond completions");

    // Failing pods past backoffLimit fail the Job.
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "flaky"},
        "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
    p.ok_in(&["apply", "-f", "-"], Some(&job.to_string()));
    let sel = "batch.kubernetes.io/job-name=flaky";
    for tries in 1..=2 {
        eventually("a try", || (pods(&p, sel).len() == tries).then_some(()));
        finish_pods(&p, sel, "Failed");
    }
    p.ok(&[
        "wait",
        "--for=condition=failed",
        "job/flaky",
        "--timeout=30s",
    ]);
    assert_eq!(p.get(&["job", "flaky"], "{.status.failed}"), "2");
}

#[test]
fn a_workload_the_controllers_cannot_run_is_refused_naming_the_field() {
    let p = Plane::start("workload-validation");
    let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let out = p.kubectl(&["apply", "-f", "-"], Some(&bad.to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {bad}");
    assert!(
        err.contains("spec.template.metadata.labels")
            && err.contains("spec.strategy.rollingUpdate.maxUnavailable"),
        "{err}"
    );
    assert_eq!(p.ok(&["get", "deploy", "-o", "name"]), "", "nothing stored");
    let out = p.kubectl(
        &[
            "create",
            "job",
            "j",
            "--image=busybox",
            "--dry-run=client",
            "-o",
            "json",
        ],
        None,
    );
    let mut job: Value = serde_json::from_slice(&out.stdout).expect("job json");
    job["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let out = p.kubectl(&["create", "-f", "-"], Some(&job.to_string()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.template.spec.restartPolicy"),
        "{err}"
    );
}

#[test]
fn a_rollout_without_progress_exceeds_its_deadline() {
    // No nodes: the pods never run, so the rollout stalls.
    let p = Plane::start("deadline");
    p.ok(&["create", "deployment", "stuck", "--image=busybox"]);
    p.ok(&[
        "patch",
        "deployment",
        "stuck",
        "--type=merge",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":3}}"#,
    ]);
    let out = p.kubectl(
        &["rollout", "status", "deployment/stuck", "--timeout=60s"],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("exceeded its progress deadline"),
        "{err}"
    );
    assert_eq!(
        p.get(
            &["deploy", "stuck"],
            "{.status.conditions[?(@.type==\"Progressing\")].reason}"
        ),
        "ProgressDeadlineExceeded"
    );
}
