//! Test harness: a real `kubevirt-local apiserver` process on a free loopback port, driven by the
//! installed kubectl (with its own cache dir) and by kube-rs.
#![allow(dead_code)]

pub mod chaos;
pub mod chaos_logs;
pub mod host;
pub mod install;
pub mod node;
pub mod plane;
pub mod slot;
pub mod users;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub use kubevirt_testsupport::{TestDir, tempdir};

/// A running server and its data directory, which it owns: removed when the server is dropped
/// in a passing test, kept (and named on stderr) when the test panics. [`Server::kill`] hands the
/// directory on for a restart.
pub struct Server {
    pub child: Child,
    pub dir: PathBuf,
    pub url: String,
    pub kubeconfig: PathBuf,
    /// `dir`, owned until [`Server::kill`] hands it on.
    owned: Option<TestDir>,
}

impl Server {
    /// Start a server with a fresh data directory.
    pub fn start(tag: &str) -> Self {
        Self::start_in(tempdir(tag), &[])
    }

    /// Start a server on `dir` (fresh, or the one an earlier [`Server::kill`] returned).
    pub fn start_in(dir: TestDir, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
            .arg("apiserver")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kubevirt-local");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines
            .next()
            .expect("server printed nothing")
            .expect("read stdout");
        let url = first.rsplit(' ').next().expect("url").to_string();
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            kubeconfig: dir.join("kubeconfig"),
            dir: dir.to_path_buf(),
            url,
            owned: Some(dir),
        }
    }

    /// Run kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// Run kubectl with `stdin`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let args: Vec<&str> = ["--request-timeout=20s"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        kubevirt_testsupport::kubectl(&self.kubeconfig, &args, stdin)
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl that must fail; returns stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Stop with SIGKILL; the data directory, for the next start.
    pub fn kill(mut self) -> TestDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.owned.take().expect("a server owns its directory")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stopped before its directory goes (the field is dropped after this).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The generated CRDs as one YAML file in `dir`.
pub fn crds_file(dir: &Path) -> PathBuf {
    let crds = kubevirt_api::object::all_crds(&Default::default());
    let mut text = String::new();
    for c in &crds {
        text.push_str("---\n");
        text.push_str(&kubevirt_api::codec::to_yaml(c).expect("yaml"));
    }
    let path = dir.join("crds.yaml");
    std::fs::write(&path, text).expect("write crds");
    path
}

/// A kube-rs client for this server (from the kubeconfig it wrote: TLS and the bearer token).
pub async fn kube_client(s: &Server) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// An upstream fixture.
pub fn fixture(name: &str) -> String {
    kubevirt_testsupport::fixture(name)
        .to_string_lossy()
        .into_owned()
}
