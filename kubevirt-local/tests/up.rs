//! `kubevirt-local up`, the embedded default, as a user runs it: one process serves the API,
//! installs the CRDs and runs the controllers and the node agent; `kubectl apply` of the demo VM
//! (examples/vm-demo.yaml) boots the guest on kubevirt-vmm with real vCPUs; `kubectl delete`
//! powers it off; SIGTERM stops everything.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kubevirt_testsupport::{
    Profile, demo_image, eventually, find_file as find, kubectl, launcher_binary, tempdir,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Stops the server if the test fails half way.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the one JSON line `up` prints when ready (blocking: no sleeps, no polling), then keeps
/// reading so the server never writes into a closed pipe.
fn ready_line(mut child: std::process::Child) -> (Up, serde_json::Value) {
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let up = Up(child);
    let ready = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    (up, ready)
}

/// A script's view of `up --listen 127.0.0.1:0 --ready-file F`: once the ready line is out (the
/// ready file is there with the same content), the first `kubectl apply` of the demo VM works,
/// with no retry, and /readyz says ok.
#[test]
fn the_plane_is_ready_when_it_says_so() {
    let dir = tempdir("ready");
    let ready_file = dir.join("run").join("ready.json");
    std::fs::create_dir_all(ready_file.parent().unwrap()).unwrap();
    // Stale files from an earlier run must not announce anything.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kubeconfig"), "stale").unwrap();
    std::fs::write(&ready_file, "stale").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .arg("up")
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-node",
            "--no-kubelet",
            "--ready-file",
        ])
        .arg(&ready_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-local up");
    let (mut up, ready) = ready_line(child);
    let kubeconfig = PathBuf::from(ready["kubeconfig"].as_str().expect("kubeconfig"));
    assert_eq!(kubeconfig, dir.join("kubeconfig"));
    assert_eq!(ready["dataDir"].as_str(), dir.to_str());
    assert_eq!(ready["pid"].as_u64(), Some(u64::from(up.0.id())));
    assert!(
        ready["address"]
            .as_str()
            .is_some_and(|a| !a.ends_with(":0")),
        "{ready}"
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ready_file).unwrap()).unwrap();
    assert_eq!(file, ready);

    let vm = std::fs::read_to_string(root().join("examples/vm-demo.yaml")).unwrap();
    let out = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&vm));
    assert!(
        out.status.success(),
        "the first apply after ready failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&kubeconfig, &["get", "--raw", "/readyz"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    let out = kubectl(&kubeconfig, &["get", "--raw", "/readyz?verbose"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[+]poststarthook/kubevirt-crds-established ok")
            && text.contains("[+]poststarthook/kubevirt-controllers ok")
            && text.ends_with("readyz check passed\n"),
        "{text}"
    );

    // SAFETY: kill(2) on the child this test spawned and has not reaped.
    unsafe {
        libc::kill(up.0.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(up.0.wait().unwrap().success());
    assert!(!ready_file.exists(), "a clean stop removes the ready file");
}

#[test]
fn kubectl_apply_runs_the_demo_vm_on_the_local_node() {
    let started = std::time::SystemTime::now();
    let launcher = launcher_binary(Profile::Debug);
    let dir = tempdir("up");
    let image = dir.join("image");
    demo_image(&dir);

    let child = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .arg("up")
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            "local",
            "--no-kubelet",
        ])
        .arg("--launcher")
        .arg(&launcher)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-local up");
    let (up, ready) = ready_line(child);
    assert!(
        ready["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://127.0.0.1:")),
        "{ready}"
    );
    let kubeconfig = dir.join("kubeconfig");

    // The CRDs are there without anyone applying them.
    let out = kubectl(
        &kubeconfig,
        &["get", "crd", "virtualmachines.kubevirt.io", "-o", "name"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let vm = std::fs::read_to_string(root().join("examples/vm-demo.yaml"))
        .unwrap()
        .replace(
            "oci:target/demo-image:demo",
            &format!("oci:{}:demo", image.display()),
        );
    let out = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&vm));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    eventually("the VMI Running on node local", || {
        let out = kubectl(
            &kubeconfig,
            &[
                "get",
                "vmi",
                "demo",
                "-o",
                "jsonpath={.status.phase}/{.status.nodeName}",
            ],
            None,
        );
        (String::from_utf8_lossy(&out.stdout) == "Running/local").then_some(())
    });
    eventually("the VM Running", || {
        let out = kubectl(
            &kubeconfig,
            &[
                "get",
                "vm",
                "demo",
                "-o",
                "jsonpath={.status.printableStatus}",
            ],
            None,
        );
        (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
    });
    let console = eventually("the guest's console", || {
        let socket = find(&dir.join("vmis"), "console.sock")?;
        let mut s = UnixStream::connect(socket).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let n = s.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.contains("cloud-init: hostname demo-vm")
            .then_some(text)
    });
    assert!(console.contains("kubevirt-rs demo guest"), "{console}");

    // Deleting the VM powers the guest off (ACPI button) before its VMI goes.
    let out = kubectl(
        &kubeconfig,
        &["delete", "vm", "demo", "--wait=true", "--timeout=60s"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the VMI gone", || {
        let out = kubectl(&kubeconfig, &["get", "vmi", "-o", "name"], None);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .is_empty()
            .then_some(())
    });
    assert!(
        find(&dir.join("vmis"), "control.sock").is_none(),
        "the launcher is gone"
    );

    let mut up = up;
    // SAFETY: kill(2) on the child this test spawned and has not reaped.
    unsafe {
        libc::kill(up.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = up.0.wait().unwrap();
    assert!(
        status.success(),
        "kubevirt-local up after SIGTERM: {status}"
    );
    // A clean stop leaves no run directory, socket, mount or loop device of its VMs behind,
    // and no launcher temp directory.
    let vmis: Vec<_> = std::fs::read_dir(dir.join("vmis"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(vmis.is_empty(), "run directories left: {vmis:?}");
    let mut left = common::host::sockets_left(&dir);
    left.extend(common::host::mounts_left(&dir));
    left.extend(common::host::loop_devices_left(&dir));
    left.extend(common::host::launcher_temp_dirs_left(started));
    assert!(left.is_empty(), "left behind: {left:#?}");
}
