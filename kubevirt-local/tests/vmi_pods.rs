//! Issue 14 end to end, as a user drives it: `kubectl apply -f examples/vm-demo.yaml` on
//! `kubevirt-local up` with its kubelet runs the VMI in a `virt-launcher-demo-xxxxx` pod (the
//! VMI controller renders it, the scheduler places it, the kubelet runs the launcher image the
//! node's registry built, the node agent starts the VMI in it); `kubectl logs -c
//! guest-console-log` shows the guest; the compute container's memory cgroup has the limit;
//! kill -9 of `up` and a restart keep the same guest on the same pod; deleting the VM takes the
//! pod away and leaves nothing on the host.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::node::*;
use kubevirt_testsupport::{
    Profile, demo_image, demo_vmi, launcher_binary, process_alive, tempdir,
};
use serde_json::Value;

const NODE: &str = "kv-vmi-pods";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vmi(up: &Up) -> Option<Value> {
    up.get("vmi", "demo")
}

/// `64Mi`, `262144Ki`, `1Gi` or plain bytes.
fn bytes(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unit {other} in {q}"),
    }
}

/// The memory cgroup (v1) of the pod's container whose process is the launcher, and that
/// process's host pid.
fn launcher_cgroup(pod_uid: &str) -> Option<(PathBuf, u32)> {
    let node = common::slot::node().expect("the test's node");
    let pod = common::node::node_cgroup(&node).join(format!("pod{pod_uid}"));
    for dir in std::fs::read_dir(&pod).ok()?.flatten() {
        let procs = std::fs::read_to_string(dir.path().join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|p| p.trim().parse::<u32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if comm.starts_with("kubevirt-launch") && cmdline.windows(5).any(|w| w == b"serve") {
                return Some((dir.path(), pid));
            }
        }
    }
    None
}

#[test]
fn a_vm_applied_with_kubectl_runs_in_its_virt_launcher_pod_and_survives_up_restarts() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    let dir = tempdir("vmi-pods");
    let data = dir.join("data");
    let image = demo_image(&dir);
    let args = ["--launcher", launcher.to_str().unwrap()];
    let (up, ready) = start_up_node(&data, NODE, &args);
    assert_eq!(ready["vmiLaunchers"], "pods", "{ready}");
    let launcher_image = ready["launcherImage"].as_str().expect("a launcher image");

    // The demo VM as the README applies it, with a memory limit the pod must carry.
    let vm = std::fs::read_to_string(root().join("examples/vm-demo.yaml"))
        .unwrap()
        .replace("oci:target/demo-image:demo", &image)
        .replace(
            "        memory: {guest: 64Mi}\n",
            "        memory: {guest: 64Mi}\n        resources: {limits: {memory: 256Mi}}\n",
        );
    assert!(
        vm.contains("limits"),
        "the example still has its memory line"
    );
    up.ok(&["apply", "-f", "-"], Some(&vm));

    let running = eventually("the VMI Running on its node", 180, || {
        vmi(&up).filter(|v| v["status"]["phase"] == "Running")
    });
    assert_eq!(running["status"]["nodeName"], NODE, "{running}");
    let vmi_uid = running["metadata"]["uid"].as_str().unwrap().to_string();

    // One launcher pod, named and labelled as upstream's, Running the launcher image.
    let pods = launcher_pods(&up);
    assert_eq!(pods.len(), 1, "{pods:#?}");
    let pod = &pods[0];
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(
        pod_name.starts_with("virt-launcher-demo-")
            && pod_name.len() == "virt-launcher-demo-".len() + 5,
        "{pod_name}"
    );
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    assert_eq!(pod["spec"]["nodeName"], NODE);
    assert_eq!(
        pod["metadata"]["labels"]["kubevirt.io/created-by"],
        vmi_uid.as_str()
    );
    assert_eq!(pod["metadata"]["labels"]["vm.kubevirt.io/name"], "demo");
    let containers = pod["spec"]["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["compute", "guest-console-log"]);
    assert_eq!(containers[0]["image"], launcher_image);
    assert!(
        running["status"]["activePods"][&pod_uid].is_string(),
        "activePods names the pod: {running}"
    );

    // The serial console through `kubectl logs`, as upstream's guest-console-log container.
    let logs = eventually("the guest's console in kubectl logs", 60, || {
        let out = up.kubectl(&["logs", &pod_name, "-c", "guest-console-log"], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("cloud-init: hostname demo-vm")
            .then_some(text)
    });
    assert!(logs.contains("kubevirt-rs demo guest"), "{logs}");

    // The compute container's memory cgroup holds the launcher and limits it to what the pod
    // says: the VMI's limit plus the launcher's overhead.
    let limit = bytes(
        containers[0]["resources"]["limits"]["memory"]
            .as_str()
            .expect("the compute container has a memory limit"),
    );
    assert!(limit > 256 << 20 && limit < 1 << 30, "{limit}");
    let (cgroup, launcher_pid) =
        eventually("the launcher's cgroup", 30, || launcher_cgroup(&pod_uid));
    let applied: u64 = std::fs::read_to_string(cgroup.join("memory.limit_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(applied, limit, "{}", cgroup.display());

    // Upstream's non-root launcher: uid and gid 107 (not 0), no capabilities left once the VM
    // runs, no new privileges, its threads under seccomp filters; /dev/kvm and the tap it opened
    // without any capability (the runtime gave the devices to its user, the agent made the tap
    // and the run directory its own).
    let status = std::fs::read_to_string(format!("/proc/{launcher_pid}/status")).unwrap();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), ["107"; 4], "{status}");
    assert_eq!(field("Gid:"), ["107"; 4], "{status}");
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{launcher_pid}/task"))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("status")).unwrap())
        .collect();
    let confined = tasks.iter().filter(|t| t.contains("Seccomp:\t2")).count();
    assert!(
        confined > 1,
        "{confined} of {} threads confined",
        tasks.len()
    );
    let run_dir = data.join("node/launchers").join(&vmi_uid);
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&run_dir).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (107, 107),
            "{}",
            run_dir.display()
        );
        let socket = std::fs::metadata(run_dir.join("control.sock")).unwrap();
        assert_eq!(socket.uid(), 107, "the launcher made its own socket");
    }

    // kill -9 of the whole `up`: the pod, its launcher and its guest keep running; a restarted
    // `up` adopts them (same pod, same launcher process), the VMI stays Running.
    let socket = data
        .join("node/launchers")
        .join(&vmi_uid)
        .join("console.sock");
    eventually("the guest answers on its console", 30, || {
        console_answer(&socket, "hostname", "demo-vm")
    });
    let data = up.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(process_alive(launcher_pid), "the launcher outlives `up`");
    assert!(
        console_answer(&socket, "hostname", "demo-vm").is_some(),
        "the guest answers while nothing manages it"
    );
    let (up, again) = start_up_node(&data, NODE, &args);
    assert_eq!(again["launcherImage"], ready["launcherImage"]);
    std::thread::sleep(Duration::from_secs(3));
    let after = eventually("the VMI Running after the restart", 60, || {
        vmi(&up).filter(|v| v["status"]["phase"] == "Running")
    });
    assert_eq!(after["metadata"]["uid"], vmi_uid.as_str());
    let pods = launcher_pods(&up);
    assert_eq!(pods.len(), 1, "{pods:#?}");
    assert_eq!(pods[0]["metadata"]["uid"], pod_uid.as_str(), "the same pod");
    assert!(process_alive(launcher_pid), "the same launcher");
    assert!(console_answer(&socket, "hostname", "demo-vm").is_some());

    // Deleting the VM: ACPI shutdown, the VMI and its pod go, nothing is left on the host.
    up.ok(
        &["delete", "vm", "demo", "--wait=true", "--timeout=90s"],
        None,
    );
    eventually("the VMI and its pod gone", 90, || {
        (vmi(&up).is_none() && launcher_pods(&up).is_empty()).then_some(())
    });
    eventually("the launcher exited", 30, || {
        (!process_alive(launcher_pid)).then_some(())
    });
    assert_nothing_left(&data);
    drop(up);
}

#[test]
fn another_pod_reaches_the_guest_through_the_pod_ip_of_its_virt_launcher_pod() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let launcher = launcher_binary(Profile::Debug);
    let dir = tempdir("vmi-pods-net");
    let data = dir.join("data");
    let image = demo_image(&dir);
    let (up, ready) = start_up_node(
        &data,
        NODE,
        &[
            "--launcher",
            launcher.to_str().unwrap(),
            "--plain-http-registry",
            im.registry.address(),
        ],
    );
    assert_eq!(ready["vmiLaunchers"], "pods", "{ready}");
    up.ok(&["apply", "-f", "-"], Some(&demo_vmi("web", &image, true)));

    // The VMI reports the pod's IP (from the CNI) as its interface's address.
    let running = eventually("the VMI Running with its pod IP", 180, || {
        let out = up.kubectl(&["get", "vmi", "web", "-o", "json"], None);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"]["phase"] == "Running" && v["status"]["interfaces"][0]["ipAddress"].is_string())
            .then_some(v)
    });
    let pods = launcher_pods(&up);
    assert_eq!(pods.len(), 1, "{pods:#?}");
    let pod_ip = pods[0]["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_string();
    assert_eq!(
        running["status"]["interfaces"][0]["ipAddress"],
        pod_ip.as_str(),
        "{running}"
    );

    // A pod on the same node fetches the guest's page through the launcher pod's IP.
    up.run_pod(&pod_yaml(
        "client",
        &im.busybox,
        &format!(
            // busybox-static's wget crashes in an empty root (glibc NSS); nc speaks HTTP.
            "for i in $(seq 1 60); do printf 'GET /from-a-pod HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {pod_ip} 80 | grep -q web-vm && printf 'GET /from-a-pod HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {pod_ip} 80 && exit 0; sleep 1; done; exit 1"
        ),
        "restartPolicy: Never",
    ));
    let done = eventually("the client pod finished", 120, || {
        up.pod("client")
            .filter(|p| p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed")
    });
    let logs = up.ok(&["logs", "client"], None);
    assert_eq!(done["status"]["phase"], "Succeeded", "{logs}");
    assert!(
        logs.contains("web-vm") && logs.contains("/from-a-pod"),
        "{logs}"
    );

    // VMI delete: the pod goes, and with its network namespace the tap and NAT rules the node
    // agent built in it; nothing is left on the host.
    up.ok(&["delete", "pod", "client", "--grace-period=1"], None);
    up.ok(
        &["delete", "vmi", "web", "--wait=true", "--timeout=90s"],
        None,
    );
    launcher_pods_gone(&up, 90);
    assert_nothing_left(&data);
    drop(up);
}
