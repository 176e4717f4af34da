//! Pods as containers on the local node: the real `kubevirt-local up` (API server + kubelet), a
//! private containerd it starts, images built here and served by Debian's `docker-registry` on
//! 127.0.0.1, driven by the real kubectl. Needs root and the containerd, runc, CNI plugins,
//! busybox-static and docker-registry packages; skips (saying why) without them.
//!
//! The tests share one pod network (bridge `kvl0`), so they run one at a time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kubevirt_testsupport::oci::{busybox_image, pause_image};
use kubevirt_testsupport::registry::Registry;
use kubevirt_testsupport::{TestDir, kubectl, tempdir};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (containerd, CNI)".into());
    }
    for (path, package) in [
        ("/usr/bin/containerd", "containerd"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/bin/busybox", "busybox-static"),
        ("/usr/bin/docker-registry", "docker-registry"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} missing (package {package})"));
        }
    }
    None
}

macro_rules! require_node {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// The registry with the pause and busybox images.
struct Images {
    registry: Registry,
    busybox: String,
    pause: String,
    _dir: TestDir,
}

fn images() -> Images {
    let dir = tempdir("registry");
    let registry = Registry::start(&dir.join("registry")).expect("start docker-registry");
    let pause = registry
        .push(
            "kubevirt-local/pause",
            "1",
            &pause_image().unwrap().build().unwrap(),
        )
        .expect("push pause");
    let busybox = registry
        .push(
            "test/busybox",
            "1",
            &busybox_image().unwrap().build().unwrap(),
        )
        .expect("push busybox");
    Images {
        registry,
        busybox,
        pause,
        _dir: dir,
    }
}

/// `kubevirt-local up` with its kubelet; on drop it is stopped with SIGTERM, and it stops its
/// pods and containerd (`--stop-pods-on-exit`).
struct Up {
    child: Option<Child>,
    data: PathBuf,
    node: String,
}

fn start_up(data: &Path, node: &str, im: &Images) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .arg("up")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--no-node", "--node-name", node])
        .args(["--sandbox-image", &im.pause])
        .args(["--plain-http-registry", im.registry.address()])
        .arg("--stop-pods-on-exit")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-local up");
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let ready: Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("up's ready line {first:?} is not JSON: {e}"));
    assert!(ready["kubeconfig"].is_string(), "{first}");
    Up {
        child: Some(child),
        data: data.to_path_buf(),
        node: node.into(),
    }
}

impl Up {
    fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec!["--request-timeout=30s"];
        all.extend_from_slice(args);
        kubectl(&self.kubeconfig(), &all, stdin)
    }
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn pod(&self, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", "pod", name, "-o", "json"], None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
    /// Applies a pod bound to this node.
    fn run_pod(&self, yaml: &str) {
        let yaml = yaml.replace("NODE", &self.node);
        self.ok(&["apply", "-f", "-"], Some(&yaml));
    }
    fn kill9(mut self) -> PathBuf {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.data.clone()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn eventually<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn running_pod(up: &Up, name: &str) -> Value {
    eventually(&format!("pod {name} Running"), 90, || {
        up.pod(name)
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
    })
}

/// `GET path` on `ip:port` from the host; the body when it answers 200.
fn http_get(ip: &str, port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::new(ip.parse().ok()?, port);
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

fn pod_yaml(name: &str, image: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 5
  {extra}
  containers:
  - name: main
    image: {image}
    command: ["/bin/sh", "-c", {script:?}]
"#
    )
}

/// What the node's runtime still holds: `ctr` lists of containers and sandboxes, veth
/// interfaces on the pod bridge, network namespaces containerd made.
fn leftovers(data: &Path) -> Vec<String> {
    let socket = data.join("node/containerd/containerd.sock");
    let mut out = Vec::new();
    let ctr = |args: &[&str]| {
        let o = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for line in ctr(&["containers", "list", "-q"])
        .lines()
        .filter(|l| !l.is_empty())
    {
        out.push(format!("container {line}"));
    }
    for line in ctr(&["tasks", "list", "-q"])
        .lines()
        .filter(|l| !l.is_empty())
    {
        out.push(format!("task {line}"));
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show", "master", "kvl0"])
        .output();
    if let Ok(o) = links {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            out.push(format!("veth {l}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir(data.join("node/pods")) {
        for e in entries.flatten() {
            out.push(format!("pod dir {}", e.path().display()));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup/memory/kubevirt-local") {
        for e in entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pod"))
        {
            out.push(format!("cgroup {}", e.path().display()));
        }
    }
    out
}

fn assert_nothing_left(data: &Path) {
    let start = Instant::now();
    loop {
        let left = leftovers(data);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "left behind: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_pod_runs_gets_an_ip_and_serves_http_to_the_host() {
    require_node!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
    assert!(ip.starts_with("10.88."), "{ip}");
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
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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

#[test]
fn graceful_and_forced_deletion() {
    require_node!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
