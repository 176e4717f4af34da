//! `kubevirt-local up --no-node`: the API server with every controller (KubeVirt's, the
//! scheduler, the workload controllers) but no node agent, driven by the real kubectl. Tests
//! make the nodes themselves (`kubectl apply` of Node objects and their status), as a kubelet
//! would.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use kubevirt_testsupport::TestDir;

/// A running `up` and its kubeconfig; it owns its data directory (removed when it is dropped in a
/// passing test, kept and named when the test panics) until [`Plane::stop`] hands it on.
pub struct Plane {
    child: Child,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
    owned: Option<TestDir>,
}

impl Plane {
    /// Start `up --no-node` on a fresh data directory; returns once it says it is ready.
    pub fn start(tag: &str) -> Self {
        Self::start_in(kubevirt_testsupport::tempdir(tag))
    }

    /// Start `up --no-node` on `dir` (a fresh one, or the one an earlier [`Plane::stop`]
    /// returned).
    pub fn start_in(dir: TestDir) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
            .args([
                "up",
                "--no-node",
                "--no-kubelet",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kubevirt-local up");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("up printed nothing").expect("stdout");
        std::thread::spawn(move || for _ in lines {});
        let ready: serde_json::Value = serde_json::from_str(&first).expect("ready line");
        let kubeconfig = PathBuf::from(ready["kubeconfig"].as_str().expect("kubeconfig"));
        Plane {
            child,
            kubeconfig,
            dir: dir.to_path_buf(),
            owned: Some(dir),
        }
    }

    /// kubectl with `stdin`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec!["--request-timeout=20s"];
        all.extend_from_slice(args);
        kubevirt_testsupport::kubectl(&self.kubeconfig, &all, stdin)
    }

    /// kubectl that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, None)
    }

    /// kubectl with `stdin` that must succeed; its stdout.
    pub fn ok_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A Ready node named `name` with `allocatable` (JSON), `labels` and `taints`, made the way
    /// a kubelet makes it: create the Node, then write its status.
    pub fn node(&self, name: &str, allocatable: serde_json::Value, spec: serde_json::Value) {
        let node = serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": spec});
        self.ok_in(&["apply", "-f", "-"], Some(&node.to_string()));
        self.node_status(name, allocatable, "True");
    }

    /// Write a node's allocatable/capacity and its Ready condition.
    pub fn node_status(&self, name: &str, allocatable: serde_json::Value, ready: &str) {
        let status = serde_json::json!({"status": {"capacity": allocatable, "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}]}});
        self.ok(&[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }

    /// `kubectl get` of one JSONPath.
    pub fn get(&self, what: &[&str], path: &str) -> String {
        let jsonpath = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", &jsonpath]);
        self.ok(&args)
    }
}

impl Plane {
    /// Stop `up`; its data directory, for the next start.
    pub fn stop(mut self) -> TestDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.owned.take().expect("a plane owns its directory")
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        // Stopped before its directory goes (the field is dropped after this).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
