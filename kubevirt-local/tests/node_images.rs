//! The node's own registry under `kubevirt-local up`: no docker-registry, no network. `up` builds
//! the pause image from the static busybox and the launcher image from the launcher binary,
//! serves them and an `--image` layout on loopback, runs every sandbox from its pause image,
//! and names the registry and the launcher image in its ready JSON; pods run the launcher
//! image and the `--image` one, driven by the real kubectl; a restarted `up` serves the same
//! references. Needs root and the containerd,
//! runc, CNI plugins and busybox-static packages.

mod common;

use common::node::*;
use kubevirt_kubelet::images::node::busybox_image;
use kubevirt_testsupport::{Profile, launcher_binary, tempdir};

#[test]
fn pods_run_the_launcher_image_and_local_layouts_from_the_nodes_registry() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    let dir = tempdir("node-images");
    let layout = dir.join("busybox-layout");
    busybox_image(
        "test/busybox",
        "ignored",
        "/usr/bin/busybox".as_ref(),
        &["sh", "echo", "cat", "sleep"],
    )
    .unwrap()
    .write_layout(&layout)
    .unwrap();
    let image_arg = format!("test/busybox:7={}", layout.display());
    let (up, ready) = start_up_with(
        &dir.join("data"),
        "kv-node-images",
        &[
            "--launcher-binary",
            launcher.to_str().unwrap(),
            "--image",
            &image_arg,
        ],
    );
    let registry = ready["registry"].as_str().expect("registry in ready JSON");
    assert!(registry.starts_with("127.0.0.1:"), "{ready}");
    let launcher_image = ready["launcherImage"]
        .as_str()
        .expect("launcherImage in ready JSON")
        .to_string();
    assert!(
        launcher_image.starts_with(&format!(
            "{registry}/kubevirt-rs/virt-launcher:{}@sha256:",
            env!("CARGO_PKG_VERSION")
        )),
        "{ready}"
    );
    assert_eq!(
        ready["sandboxImage"],
        format!("{registry}/kubevirt-rs/pause:1").as_str(),
        "{ready}"
    );
    let busybox = format!("{registry}/test/busybox:7");
    assert!(
        ready["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == busybox.as_str()),
        "{ready}"
    );
    // containerd trusts it through the hosts directory `up` writes.
    let hosts = std::fs::read_to_string(
        dir.join("data/node/containerd/certs.d")
            .join(registry)
            .join("hosts.toml"),
    )
    .expect("hosts.toml for the node's registry");
    assert!(hosts.contains(&format!("http://{registry}")), "{hosts}");

    up.run_pod(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: launcher-version
spec:
  nodeName: NODE
  restartPolicy: Never
  containers:
  - name: compute
    image: {launcher_image}
    command: ["/usr/bin/kubevirt-launcher", "--version"]
"#
    ));
    up.run_pod(&pod_yaml(
        "from-layout",
        &busybox,
        "echo hello from the layout; sleep 3600",
        "",
    ));
    let done = eventually("the launcher pod Succeeded", 120, || {
        up.pod("launcher-version")
            .filter(|p| p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed")
    });
    assert_eq!(done["status"]["phase"], "Succeeded", "{done}");
    let logs = up.ok(&["logs", "launcher-version"], None);
    let own = std::process::Command::new(&launcher)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(logs.trim(), String::from_utf8_lossy(&own.stdout).trim());

    running_pod(&up, "from-layout");
    let logs = eventually("the layout pod's output", 30, || {
        let l = up.ok(&["logs", "from-layout"], None);
        l.contains("hello").then_some(l)
    });
    assert_eq!(logs.trim(), "hello from the layout");

    // The node's images stay in the registry's directory, one layout each — or, when the
    // suite shares them (scripts/test.sh), under the shared directory, one per set of inputs.
    let shared = std::env::var_os("KUBEVIRT_LOCAL_SHARED_IMAGES").filter(|s| !s.is_empty());
    for image in ["pause", "virt-launcher"] {
        let found = match &shared {
            None => dir
                .join("data/node/registry")
                .join(image)
                .join("index.json")
                .is_file(),
            Some(shared) => std::fs::read_dir(shared).unwrap().flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("kubevirt-rs-{image}-"))
                    && e.path().join("index.json").is_file()
            }),
        };
        assert!(found, "{image}");
    }
    // A restarted `up` (kill -9: containerd and the pods keep running) serves the same images
    // at the same address, so the adopted containerd's sandbox image and the pods' image
    // references stay valid.
    let before =
        running_pod(&up, "from-layout")["status"]["containerStatuses"][0]["containerID"].clone();
    let data = up.kill9();
    let (up, again) = start_up_with(
        &data,
        "kv-node-images",
        &[
            "--launcher-binary",
            launcher.to_str().unwrap(),
            "--image",
            &image_arg,
        ],
    );
    for field in ["registry", "launcherImage", "sandboxImage", "images"] {
        assert_eq!(again[field], ready[field], "{field}");
    }
    let after =
        running_pod(&up, "from-layout")["status"]["containerStatuses"][0]["containerID"].clone();
    assert_eq!(after, before, "the pod was adopted, not restarted");

    up.ok(
        &[
            "delete",
            "pod",
            "launcher-version",
            "from-layout",
            "--grace-period=1",
        ],
        None,
    );
    assert_nothing_left(&dir.join("data"));
}
