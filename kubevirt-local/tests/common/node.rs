//! The local node for tests: `kubevirt-local up` with its kubelet and a private containerd, the
//! pause and busybox images in a private `docker-registry`, and checks that nothing is left on
//! the host. Needs root and the containerd, runc, CNI plugins, busybox-static and
//! docker-registry packages; [`skip_reason`] says why not when they are missing.
//!
//! Each node runs on the pod network of the [`super::slot`] its test holds: a test takes
//! [`node_slot`] first, so node tests of several binaries run side by side.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kubevirt_testsupport::oci::{busybox_image, pause_image};
use kubevirt_testsupport::registry::Registry;
use kubevirt_testsupport::{Profile, TestDir, kubectl, tempdir, virtctl_binary};
use serde_json::Value;

use super::host;
use super::slot::{self as slot};
// Re-exported for the node tests (`use common::node::*`); binaries without them don't use it.
#[allow(unused_imports)]
pub use super::slot::node_slot;

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
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

#[macro_export]
macro_rules! require_node {
    () => {
        if let Some(why) = $crate::common::node::skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// The registry with the pause and busybox images.
pub struct Images {
    pub registry: Registry,
    pub busybox: String,
    pub pause: String,
    _dir: TestDir,
}

pub fn images() -> Images {
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
pub struct Up {
    child: Option<Child>,
    pub data: PathBuf,
    pub node: String,
}

pub fn start_up(data: &Path, node: &str, im: &Images) -> Up {
    start_up_with(
        data,
        node,
        &[
            "--sandbox-image",
            &im.pause,
            "--plain-http-registry",
            im.registry.address(),
        ],
    )
    .0
}

/// `up` with `args` added, no node agent; with its ready JSON.
pub fn start_up_with(data: &Path, node: &str, args: &[&str]) -> (Up, Value) {
    let mut all = vec!["--no-node"];
    all.extend_from_slice(args);
    start_up_node(data, node, &all)
}

/// `up` with `args` added (its node agent too, unless they say `--no-node`); with its ready
/// JSON.
pub fn start_up_node(data: &Path, node: &str, args: &[&str]) -> (Up, Value) {
    let net = slot::network();
    slot::set_node(node);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .arg("up")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--node-name", node])
        .args(["--pod-bridge", &net.bridge, "--pod-cidr", &net.cidr])
        .args(args)
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
    let up = Up {
        child: Some(child),
        data: data.to_path_buf(),
        node: node.into(),
    };
    (up, ready)
}

/// `up` on `<dir>/data` with `args` (see [`start_up_node`]), its node's registry serving a
/// busybox image with `tools` as `test/busybox:1` (its layout written to
/// `<dir>/busybox-layout`); with its ready JSON and the image's reference.
pub fn start_up_busybox(
    dir: &Path,
    node: &str,
    tools: &[&str],
    args: &[&str],
) -> (Up, Value, String) {
    let layout = dir.join("busybox-layout");
    kubevirt_kubelet::images::node::busybox_image(
        "test/busybox",
        "1",
        "/usr/bin/busybox".as_ref(),
        tools,
    )
    .expect("a busybox image")
    .write_layout(&layout)
    .expect("its layout");
    let image_arg = format!("test/busybox:1={}", layout.display());
    let mut all = vec!["--image", &image_arg];
    all.extend_from_slice(args);
    let (up, ready) = start_up_node(&dir.join("data"), node, &all);
    let image = format!(
        "{}/test/busybox:1",
        ready["registry"].as_str().expect("the node's registry")
    );
    (up, ready, image)
}

impl Up {
    pub fn kubeconfig(&self) -> PathBuf {
        self.data.join("kubeconfig")
    }
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec!["--request-timeout=30s"];
        all.extend_from_slice(args);
        kubectl(&self.kubeconfig(), &all, stdin)
    }
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    pub fn pod(&self, name: &str) -> Option<Value> {
        self.get("pod", name)
    }
    /// The objects of `kind` with the labels `selector` (`kubectl get KIND -l SELECTOR`).
    pub fn list(&self, kind: &str, selector: &str) -> Vec<Value> {
        let out = self.ok(&["get", kind, "-l", selector, "-o", "json"], None);
        let list: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl get {kind} -l {selector}: not a list: {e}"));
        list["items"].as_array().cloned().unwrap_or_default()
    }
    /// Runs `virtctl ARGS` against this cluster.
    pub fn virtctl(&self, args: &[&str]) -> Output {
        Command::new(virtctl_binary(Profile::Debug))
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .output()
            .expect("run virtctl")
    }
    /// Object `kind/name` as JSON, if it exists.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"], None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
    /// Applies a pod bound to this node.
    pub fn run_pod(&self, yaml: &str) {
        let yaml = yaml.replace("NODE", &self.node);
        self.ok(&["apply", "-f", "-"], Some(&yaml));
    }
    /// DataVolume `name` once its phase is `want`.
    pub fn dv_phase(&self, name: &str, want: &str) -> Value {
        eventually(&format!("DataVolume {name} {want}"), 240, || {
            self.get("dv", name)
                .filter(|d| d["status"]["phase"] == want)
        })
    }
    /// The host path of the local volume bound to claim `name`.
    pub fn volume_path(&self, name: &str) -> PathBuf {
        let pvc = self.get("pvc", name).expect("the claim");
        assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
        let pv_name = pvc["spec"]["volumeName"].as_str().expect("its volume");
        let pv = self.get("pv", pv_name).expect("the volume");
        PathBuf::from(
            pv["spec"]["local"]["path"]
                .as_str()
                .expect("a local volume"),
        )
    }
    pub fn kill9(mut self) -> PathBuf {
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

/// Runs a host command that must succeed (qemu-img, genisoimage, ...), naming it and its stderr
/// when it does not.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn eventually<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
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

/// The VMIs' virt-launcher pods (upstream's label `kubevirt.io=virt-launcher`).
pub fn launcher_pods(up: &Up) -> Vec<Value> {
    up.list("pods", "kubevirt.io=virt-launcher")
}

/// Waits up to `secs` for every virt-launcher pod to be gone (deleted, not just ended).
pub fn launcher_pods_gone(up: &Up, secs: u64) {
    eventually("the launcher pods gone", secs, || {
        launcher_pods(up).is_empty().then_some(())
    });
}

/// `obj`'s status condition of `type_`, or null.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

pub fn running_pod(up: &Up, name: &str) -> Value {
    eventually(&format!("pod {name} Running"), 90, || {
        up.pod(name)
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
    })
}

/// `GET path` on `ip:port` from the host; the body when it answers 200.
pub fn http_get(ip: &str, port: u16, path: &str) -> Option<String> {
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

pub fn pod_yaml(name: &str, image: &str, script: &str, extra: &str) -> String {
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

/// What the node still holds on the host: `ctr` lists of containers and sandboxes, containerd
/// shims of the node's containerd, veth interfaces on the pod bridge, pod directories, and
/// everything [`host::while_running`] checks (network namespaces, NAT rules, mounts, loop
/// devices, pod cgroups in every hierarchy, launcher temp directories); once `up` on `data` has
/// stopped, [`host::once_stopped`] too (the pod bridge, sockets below `data`).
pub fn leftovers(data: &Path) -> Vec<String> {
    let net = slot::network();
    let node = slot::node().expect("a node started on this test's slot");
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
    for pid in kubevirt_kubelet::containerd::shims_of(&socket) {
        out.push(format!("containerd shim, pid {pid}"));
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show", "master", &net.bridge])
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
    let scope = host::Scope {
        data: data.to_path_buf(),
        node,
        net,
        since: slot::taken().expect("a slot taken"),
    };
    out.extend(host::while_running(&scope));
    if !host::up_running(data) {
        out.extend(host::once_stopped(&scope));
    }
    out
}

/// The memory cgroup directory of node `node`'s pods.
pub fn node_cgroup(node: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/memory/kubevirt-local").join(node)
}

pub fn assert_nothing_left(data: &Path) {
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

/// A console command's answer through a launcher's console socket, once it says `expect`.
pub fn console_answer(socket: &Path, command: &str, expect: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    s.write_all(format!("{command}\r").as_bytes()).ok()?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) if text.contains(expect) => break,
            Err(_) => {}
        }
    }
    text.contains(expect).then_some(text)
}

/// An address of this host that pods reach (through the pod bridge's routing): the first global
/// IPv4 address that is not a test node's pod bridge (`kvl*`, `kvt*`).
pub fn host_ip() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.contains(" kvl") && !l.contains(" kvt"))
        .find_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .and_then(|cidr| cidr.split('/').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no global IPv4 address: {text}"))
}

/// Serves the files of `dir` over HTTP/1.1 on every address (GET and HEAD; 404 for anything
/// else); its port.
pub fn serve_dir(dir: PathBuf) -> u16 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || answer_file(conn, &dir));
        }
    });
    port
}

fn answer_file(conn: std::net::TcpStream, dir: &Path) {
    use std::io::Write;
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let file = dir.join(path.trim_start_matches('/'));
    let mut out = conn;
    match std::fs::read(&file) {
        Ok(body) if !path.contains("..") && file.is_file() => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            if method == "GET" {
                let _ = out.write_all(&body);
            }
        }
        _ => {
            let _ = out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}
