//! Helpers shared by the launcher's integration tests: commands, network namespaces the tests
//! create (root), temporary directories and OCI images.
#![allow(dead_code, unused_imports)]

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared with the other crates' tests: unique temporary directories and the demo guest's image
/// (`oci:<dir>/image:demo`).
pub use kubevirt_testsupport::{demo_image, tempdir};

/// Run a command that must succeed.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", args[0]));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A veth pair between the network namespaces `pod` (its end `eth0`, at `pod_ip`/24) and `peer`
/// (its end `peer0`, at `peer_ip`/24 if given), both ends up: a pod's network as a CNI plugin
/// leaves it.
pub fn veth_pair(pod: &str, peer: &str, pod_ip: &str, peer_ip: Option<&str>) {
    run(&[
        "ip", "link", "add", "eth0", "netns", pod, "type", "veth", "peer", "name", "peer0",
        "netns", peer,
    ]);
    let pod_cidr = format!("{pod_ip}/24");
    run(&["ip", "-n", pod, "addr", "add", &pod_cidr, "dev", "eth0"]);
    if let Some(ip) = peer_ip {
        let peer_cidr = format!("{ip}/24");
        run(&["ip", "-n", peer, "addr", "add", &peer_cidr, "dev", "peer0"]);
    }
    run(&["ip", "-n", pod, "link", "set", "eth0", "up"]);
    run(&["ip", "-n", peer, "link", "set", "peer0", "up"]);
}

/// Network namespaces created for a test, removed on drop.
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    /// Create `names` (each with its loopback up).
    pub fn create(names: &[&str]) -> Self {
        let ns = Namespaces(names.iter().map(|n| n.to_string()).collect());
        for n in names {
            run(&["ip", "netns", "add", n]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Move the calling thread into network namespace `ns`.
pub fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on a valid namespace fd only moves the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Run `f` on a new thread inside network namespace `ns`.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
}

/// `sha256:<hex>`.
pub fn digest(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

/// An OCI image's blobs, from the launcher's own writer.
pub struct ImageBlobs(pub kubevirt_launcher::oci::ImageBlobs);

impl ImageBlobs {
    /// An image with `files` (`path`, contents) in one layer.
    pub fn with(files: &[(&str, &[u8])]) -> Self {
        ImageBlobs(kubevirt_launcher::oci::ImageBlobs::with(files).expect("build image"))
    }

    /// Write an OCI image layout at `dir` with this image tagged `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        self.0.write_layout(dir, tag).expect("write layout");
    }
}

impl std::ops::Deref for ImageBlobs {
    type Target = kubevirt_launcher::oci::ImageBlobs;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// A launcher process whose stdout (the console) and stderr (its messages) are collected
/// separately, so lines written to both at once do not interleave.
pub struct Launcher {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

impl Launcher {
    /// Starts `cmd` with piped stdin, stdout and stderr.
    pub fn spawn(mut cmd: Command) -> Launcher {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubevirt-launcher");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        Launcher {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    /// Everything so far: the console, then the launcher's messages.
    pub fn output(&self) -> String {
        format!(
            "{}\n--- launcher messages ---\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// The console so far (stdout), without the launcher's messages.
    pub fn console(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// The launcher's own messages so far (its log on stderr), without the console.
    pub fn messages(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn shows(&self, text: &str) -> bool {
        self.stdout.lock().unwrap().contains(text) || self.stderr.lock().unwrap().contains(text)
    }

    /// Waits (up to a minute) until the console or the messages show `text`; returns all
    /// output so far.
    pub fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.shows(text) {
                return self.output();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                if self.shows(text) {
                    return self.output();
                }
                panic!(
                    "launcher exited ({status}) before {text:?}; output:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `text` on the launcher's stdin.
    pub fn type_text(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// The launcher's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the launcher.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Its exit status if it exits within `limit` (`None`: it still runs).
    pub fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // What it printed last reaches the collectors.
                std::thread::sleep(Duration::from_millis(200));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the launcher to exit; returns its status and everything it printed.
    pub fn wait(&mut self) -> (ExitStatus, String) {
        self.stdin = None;
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        (status, self.output())
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `docker-registry` process, killed on drop.
pub struct RegistryProcess(Child);

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Debian's docker-registry on a free loopback port; returns it and `host:port`.
pub fn start_registry(dir: &Path) -> (RegistryProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    std::fs::write(&config, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n", dir.join("data").display())).unwrap();
    let child = Command::new("docker-registry")
        .args(["serve", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry is installed (run scripts/setup.sh)");
    let proc = RegistryProcess(child);
    for _ in 0..100 {
        if ureq::get(format!("http://{host}/v2/")).call().is_ok() {
            return (proc, host);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("docker-registry did not start on {host}");
}

/// Pushes `img` as `repo:tag` to the registry at `host`.
pub fn push(host: &str, repo: &str, tag: &str, img: &ImageBlobs) {
    for blob in [&img.config, &img.layer] {
        let resp = ureq::post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
            .send_empty()
            .expect("start upload");
        let location = resp
            .headers()
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{host}{location}")
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        ureq::put(format!("{url}{sep}digest={}", digest(blob)))
            .content_type("application/octet-stream")
            .send(blob.as_slice())
            .expect("upload");
    }
    ureq::put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .content_type("application/vnd.oci.image.manifest.v1+json")
        .send(img.manifest.as_slice())
        .expect("push manifest");
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{:by$}{l}\n", ""))
        .collect()
}

/// A VMI booting the demo guest from `image`: `memory` of RAM, the `devices` mapping body and
/// more of `spec` as YAML (each written unindented).
pub fn demo_vmi(name: &str, image: &str, memory: &str, devices: &str, spec: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  domain:\n    memory: {{guest: {memory}}}\n    firmware:\n      kernelBoot: {{container: {{image: \"{image}\", kernelPath: /boot/demo.elf}}}}\n    devices:\n{}{}",
        indent(devices, 6),
        indent(spec, 2)
    )
}

/// `kubevirt-launcher run` for `yaml` (written to `<dir>/vmi.yaml`) with its run, cache and
/// volumes directories under `dir`, started through `wrapper` (e.g. `ip netns exec NS`).
pub fn run_command(dir: &Path, yaml: &str, wrapper: &[&str]) -> Command {
    let file = dir.join("vmi.yaml");
    std::fs::write(&file, yaml).unwrap();
    let launcher = env!("CARGO_BIN_EXE_kubevirt-launcher");
    let mut cmd = match wrapper {
        [] => Command::new(launcher),
        [program, args @ ..] => {
            let mut c = Command::new(program);
            c.args(args).arg(launcher);
            c
        }
    };
    cmd.args(["run", file.to_str().unwrap()])
        .args(["--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()]);
    cmd
}

/// A VMI document (YAML) as the API server would send it in `start`: JSON with `uid`.
pub fn vmi_json(yaml: &str, uid: &str) -> serde_json::Value {
    let mut doc = kubevirt_api::codec::documents_from_yaml(yaml)
        .expect("VMI YAML")
        .into_iter()
        .next()
        .expect("one document")
        .value;
    doc["metadata"]["uid"] = serde_json::Value::String(uid.into());
    doc
}

/// `kubevirt-launcher serve` for the VMI `namespace/name` with `uid`, its run and cache
/// directories under `dir`, started through `wrapper` (e.g. `ip netns exec NS`).
pub fn serve_command(dir: &Path, ns_name: (&str, &str), uid: &str, wrapper: &[&str]) -> Command {
    let launcher = env!("CARGO_BIN_EXE_kubevirt-launcher");
    let mut cmd = match wrapper {
        [] => Command::new(launcher),
        [program, args @ ..] => {
            let mut c = Command::new(program);
            c.args(args).arg(launcher);
            c
        }
    };
    cmd.args([
        "serve",
        "--namespace",
        ns_name.0,
        "--name",
        ns_name.1,
        "--uid",
        uid,
    ])
    .args(["--run-dir", dir.join("run").to_str().unwrap()])
    .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
    .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()]);
    cmd
}

/// A client of the launcher's control socket in `<dir>/run`, once the socket answers.
pub fn control_client(dir: &Path) -> kubevirt_launcher_protocol::Client {
    let client = kubevirt_launcher_protocol::Client::for_run_dir(&dir.join("run"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.status().is_err() {
        assert!(
            Instant::now() < deadline,
            "no control socket in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    client
}

/// Waits (up to a minute) until the launcher's status is `phase`.
pub fn wait_for_phase(
    client: &kubevirt_launcher_protocol::Client,
    phase: kubevirt_launcher_protocol::Phase,
) -> kubevirt_launcher_protocol::Status {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client.status();
        if let Ok(s) = &status
            && s.phase == phase
        {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "never {phase:?}: {status:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A migration target: `run --incoming unix:<dir>/incoming.sock` for `vmi` (its run, cache and
/// volumes directories under `dir`, `extra` arguments added), once it listens; and the address
/// a source migrates to.
pub fn incoming_target(dir: &Path, vmi: &str, extra: &[&str]) -> (Launcher, String) {
    let socket = dir.join("incoming.sock");
    let addr = format!("unix:{}", socket.display());
    let mut cmd = run_command(dir, vmi, &[]);
    cmd.args(extra).args(["--incoming", &addr]);
    let launcher = Launcher::spawn(cmd);
    kubevirt_testsupport::eventually_within(
        Duration::from_secs(60),
        "the target to listen",
        || socket.exists().then_some(()),
    );
    (launcher, addr)
}

/// Polls a source launcher's status until its migration ended; returns how it ended. A source
/// that stopped answering exited after handing its guest over: `Completed`.
pub fn migration_outcome(
    client: &kubevirt_launcher_protocol::Client,
) -> kubevirt_launcher_protocol::MigrationStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Ok(status) = client.status() else {
            return kubevirt_launcher_protocol::MigrationStatus {
                phase: "Completed".into(),
                ..Default::default()
            };
        };
        if let Some(m) = status.migration.filter(|m| m.is_done()) {
            return m;
        }
        assert!(Instant::now() < deadline, "the migration never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
}
