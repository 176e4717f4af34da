//! KubeVirt installed by its operator on `kubevirt-local up --bare`, as a user does it (the
//! seed's two commands): the images built from this build's binaries (`scripts/images.sh`,
//! debug info stripped to keep them small) and pushed to Debian's docker-registry on
//! 127.0.0.1, the manifests written for that registry (`kubevirt-controller manifests`),
//! `up --bare` trusting it over plain HTTP, then the real kubectl: `create -f
//! kubevirt-operator.yaml`, `create -f kubevirt-cr.yaml`, `wait kv kubevirt --for
//! condition=Available`, and virt-api's APIService Available.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kubevirt_testsupport::registry::Registry;
use kubevirt_testsupport::{Profile, controller_binary, launcher_binary};
use serde_json::Value;

use super::node::{Up, eventually, run, start_up_node};

/// KubeVirt's namespace.
pub const NS: &str = "kubevirt";
const TAG: &str = "e2e";

/// An install: `up --bare` with KubeVirt Available, and what made it.
pub struct Installed {
    pub up: Up,
    /// `up`'s arguments (for a restart on the same data directory).
    pub args: Vec<String>,
    pub operator: PathBuf,
    pub cr: PathBuf,
    /// Serves the images; stopped when dropped.
    pub registry: Registry,
    /// This host's one install at a time (see [`one_install`]).
    pub lock: std::fs::File,
}

/// One install on this host at a time, held for as long as the test keeps the lock: virt-handler
/// listens on the host's network (its endpoint, its metrics on 8187) and keeps its launchers'
/// run directories in one host path, so two installs side by side (`scripts/test.sh` runs test
/// binaries at once) would take each other's ports and directories.
fn one_install() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let path = "/tmp/kubevirt-local-test-operator.lock";
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: flock on a descriptor `file` owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {path}: {}", std::io::Error::last_os_error());
    file
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

/// KubeVirt's CR as JSON, if the API answers.
pub fn kv(up: &Up) -> Option<Value> {
    let o = up.kubectl(&["get", "kv", "kubevirt", "-n", NS, "-o", "json"], None);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

/// `kubectl get pods -o wide` of namespace `ns`, for failure messages.
pub fn pods_in(up: &Up, ns: &str) -> String {
    String::from_utf8_lossy(
        &up.kubectl(&["get", "pods", "-n", ns, "-o", "wide"], None)
            .stdout,
    )
    .into_owned()
}

/// Installs KubeVirt on a new `up --bare` (data directory `<dir>/data`, node `node`); returns
/// once the KubeVirt CR and virt-api's APIService are Available.
pub fn install_kubevirt(dir: &Path, node: &str) -> Installed {
    let lock = one_install();
    let started = Instant::now();
    let bins = binaries(dir);
    eprintln!("binaries ready after {:?}", started.elapsed());
    let registry = Registry::start(&dir.join("registry")).expect("start docker-registry");
    let reg = registry.address().to_string();

    // The images, pushed.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = Command::new(root.join("scripts/images.sh"))
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

    let args: Vec<String> = ["--bare", "--plain-http-registry", &reg]
        .map(str::to_string)
        .to_vec();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (up, _ready) = start_up_node(&dir.join("data"), node, &arg_refs);
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
    eprintln!("KubeVirt Available after {:?}", started.elapsed());
    Installed {
        up,
        args,
        operator,
        cr,
        registry,
        lock,
    }
}
