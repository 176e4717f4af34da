//! The seed's install on the embedded default (issue 18), as a user does it: the images built
//! from this build's binaries (`scripts/images.sh`, debug info stripped to keep them small) and
//! pushed to Debian's docker-registry on 127.0.0.1, the manifests written for that registry
//! (`kubevirt-controller manifests`), `kubevirt-local up --bare` trusting it over plain HTTP,
//! then the real kubectl: `create -f kubevirt-operator.yaml`, `create -f kubevirt-cr.yaml`,
//! `wait kv kubevirt --for condition=Available`. The operator's virt-api runs behind its
//! APIService, reached through the API server's aggregation; the demo VM runs; virtctl pauses
//! it through the aggregated API; its events are there; virt-controller and virt-handler serve
//! its metrics with upstream's names; deleting the CR is held while the VM
//! exists and done after; nothing is left.
//!
//! Needs root, containerd, runc, the CNI plugins, busybox-static, docker-registry and skopeo.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::install::{Installed, NS, install_kubevirt, kv};
use common::node::*;
use kubevirt_testsupport::{Profile, demo_image, tempdir, virtctl_binary};
use serde_json::Value;

const NODE: &str = "kv-install";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_seeds_two_commands_install_kubevirt_on_up_bare() {
    require_node!();
    let _node = node_slot();
    let started = Instant::now();
    let dir = tempdir("operator-install");
    let Installed {
        up,
        operator,
        registry: _registry,
        lock: _lock,
        ..
    } = install_kubevirt(&dir, NODE);

    // The demo VM runs.
    let image = demo_image(&dir);
    let vm = std::fs::read_to_string(root().join("examples/vm-demo.yaml"))
        .unwrap()
        .replace("oci:target/demo-image:demo", &image);
    up.ok(&["apply", "-f", "-"], Some(&vm));
    eventually("the VMI Running", 120, || {
        up.get("vmi", "demo")
            .filter(|v| v["status"]["phase"] == "Running")
    });
    eprintln!("VMI Running after {:?}", started.elapsed());

    // virtctl pauses and unpauses it through the aggregated API.
    let virtctl = virtctl_binary(Profile::Debug);
    for (verb, paused) in [("pause", true), ("unpause", false)] {
        let o = Command::new(&virtctl)
            .env("KUBECONFIG", up.kubeconfig())
            .args([verb, "vm", "demo"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "virtctl {verb}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eventually(&format!("VMI paused = {paused}"), 30, || {
            up.get("vmi", "demo")
                .filter(|v| (condition(v, "Paused")["status"] == "True") == paused)
        });
    }

    // The VM's story in events.
    let events: Value = serde_json::from_str(&up.ok(
        &[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            "involvedObject.kind=VirtualMachine,involvedObject.name=demo",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "SuccessfulCreate"),
        "{events:#}"
    );

    // The installed components' metrics, with upstream's names: virt-controller's on its pod's
    // 8443 (HTTP), the node agent's on the node's 8187 (HTTPS, its serving certificate).
    let controller_ip = eventually("virt-controller's pod IP", 30, || {
        let pods: Value = serde_json::from_str(&up.ok(
            &[
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                "kubevirt.io=virt-controller",
                "-o",
                "json",
            ],
            None,
        ))
        .ok()?;
        pods["items"][0]["status"]["podIP"]
            .as_str()
            .map(str::to_string)
    });
    let controller_metrics = eventually("virt-controller's metrics count the VMI", 30, || {
        http_get(&controller_ip, 8443, "/metrics").filter(|m| {
            m.lines().any(|l| {
                l.starts_with("kubevirt_vmi_phase_count{")
                    && l.contains("phase=\"running\"")
                    && l.ends_with(" 1")
            })
        })
    });
    assert!(
        controller_metrics.contains("kubevirt_vm_resource_requests{"),
        "{controller_metrics}"
    );
    let handler_metrics = eventually(
        "virt-handler's metrics show the VMI's vCPU time",
        30,
        || {
            let o = Command::new("curl")
                .args(["-sfk", "https://127.0.0.1:8187/metrics"])
                .output()
                .ok()?;
            let text = String::from_utf8(o.stdout).ok()?;
            text.lines()
                .any(|l| {
                    l.starts_with("kubevirt_vmi_vcpu_seconds_total{") && l.contains("name=\"demo\"")
                })
                .then_some(text)
        },
    );
    assert!(
        handler_metrics.contains("kubevirt_vmi_memory_resident_bytes{"),
        "{handler_metrics}"
    );

    // Deleting the CR is held while the VM exists, then done.
    up.ok(
        &["delete", "kv", "kubevirt", "-n", NS, "--wait=false"],
        None,
    );
    let held = eventually("the CR held in Deleting", 30, || {
        kv(&up).filter(|k| k["status"]["phase"] == "Deleting")
    });
    assert!(
        held.to_string().contains("there are still Virtual Machine"),
        "{held:#}"
    );
    assert!(up.get("vmi", "demo").is_some(), "the VM keeps running");
    up.ok(
        &["delete", "vm", "demo", "--wait=true", "--timeout=90s"],
        None,
    );
    up.ok(
        &[
            "wait",
            "kv",
            "kubevirt",
            "-n",
            NS,
            "--for=delete",
            "--timeout=90s",
        ],
        None,
    );
    eventually("KubeVirt's pods gone", 90, || {
        let pods = up.ok(
            &["get", "pods", "-n", NS, "-l", "kubevirt.io", "-o", "name"],
            None,
        );
        pods.lines()
            .all(|l| l.contains("virt-operator"))
            .then_some(())
    });
    let apiservices = up.ok(&["get", "apiservices", "-o", "name"], None);
    assert!(
        !apiservices.contains("subresources.kubevirt.io"),
        "{apiservices}"
    );
    up.ok(
        &[
            "delete",
            "-f",
            operator.to_str().unwrap(),
            "--ignore-not-found",
            "--wait=true",
        ],
        None,
    );
    eventually("no pods left", 90, || {
        up.ok(&["get", "pods", "-A", "-o", "name"], None)
            .trim()
            .is_empty()
            .then_some(())
    });
    let data = up.data.clone();
    drop(up);
    assert_nothing_left(&data);
    eprintln!("done after {:?}", started.elapsed());
}
