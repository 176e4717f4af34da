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

use common::node::*;
use kubevirt_testsupport::registry::Registry;
use kubevirt_testsupport::{
    Profile, controller_binary, demo_image, launcher_binary, tempdir, virtctl_binary,
};
use serde_json::Value;

const NODE: &str = "kv-install";
const NS: &str = "kubevirt";
const TAG: &str = "e2e";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The three binaries `scripts/images.sh` takes, the two that go into images without their
/// debug info.
fn binaries(dir: &Path) -> PathBuf {
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    for (name, from) in [
        ("kubevirt-controller", controller_binary(Profile::Debug)),
        ("kubevirt-launcher", launcher_binary(Profile::Debug)),
    ] {
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&from)
            .arg(bins.join(name)));
    }
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_kubevirt-local"),
        bins.join("kubevirt-local"),
    )
    .unwrap();
    bins
}

fn kv(up: &Up) -> Option<Value> {
    let o = up.kubectl(&["get", "kv", "kubevirt", "-n", NS, "-o", "json"], None);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

fn pods_in(up: &Up, ns: &str) -> String {
    String::from_utf8_lossy(
        &up.kubectl(&["get", "pods", "-n", ns, "-o", "wide"], None)
            .stdout,
    )
    .into_owned()
}

#[test]
fn the_seeds_two_commands_install_kubevirt_on_up_bare() {
    require_node!();
    let _node = node_slot();
    let started = Instant::now();
    let dir = tempdir("operator-install");
    let bins = binaries(&dir);
    eprintln!("binaries ready after {:?}", started.elapsed());
    let registry = Registry::start(&dir.join("registry")).expect("start docker-registry");
    let reg = registry.address().to_string();

    // The images, pushed.
    let o = Command::new(root().join("scripts/images.sh"))
        .args([&reg, TAG])
        .env("KUBEVIRT_BINARIES", &bins)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "images.sh: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("images pushed after {:?}", started.elapsed());

    // The manifests for that registry.
    let manifests = dir.join("manifests");
    run(Command::new(controller_binary(Profile::Debug))
        .args([
            "manifests",
            "--registry",
            &reg,
            "--tag",
            TAG,
            "--output-dir",
        ])
        .arg(&manifests));

    let (up, _ready) = start_up_node(
        &dir.join("data"),
        NODE,
        &["--bare", "--plain-http-registry", &reg],
    );
    let operator = manifests.join("kubevirt-operator.yaml");
    let cr = manifests.join("kubevirt-cr.yaml");
    up.ok(&["create", "-f", operator.to_str().unwrap()], None);
    up.ok(&["create", "-f", cr.to_str().unwrap()], None);
    let o = up.kubectl(
        &[
            "wait",
            "kv",
            "kubevirt",
            "-n",
            NS,
            "--for",
            "condition=Available",
            "--timeout=150s",
        ],
        None,
    );
    assert!(
        o.status.success(),
        "kubectl wait: {}\n{}\n{:#}",
        String::from_utf8_lossy(&o.stderr),
        pods_in(&up, NS),
        kv(&up).unwrap_or_default()["status"]
    );
    eprintln!("KubeVirt Available after {:?}", started.elapsed());

    // virt-api behind its APIService, through the API server's aggregation. Its Available
    // condition follows virt-api's endpoints (checked every 2 s, as kube-aggregator does), so it
    // may trail the KubeVirt CR's by a moment.
    eventually("virt-api's APIService Available", 30, || {
        let apiservices = up.ok(&["get", "apiservices"], None);
        apiservices
            .lines()
            .any(|l| {
                l.split_whitespace().take(3).collect::<Vec<_>>()
                    == ["v1.subresources.kubevirt.io", "kubevirt/virt-api", "True"]
            })
            .then_some(())
    });
    let discovery = up.ok(&["get", "--raw", "/apis/subresources.kubevirt.io/v1"], None);
    assert!(
        discovery.contains("virtualmachineinstances/pause"),
        "{discovery}"
    );

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
