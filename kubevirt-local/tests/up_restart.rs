//! kill -9 of the whole `kubevirt-local up` (API server, controllers and node agent in one
//! process) and a restart on the same data directory: the demo VM's guest runs on, and the new
//! `up` adopts it — the VMI stays Running on the same launcher, the guest is not rebooted, no
//! second launcher boots the same VM — and `kubectl delete vm` still powers it off gracefully.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubevirt_testsupport::{
    Profile, demo_image, kubectl, launcher_binary, launchers_in, process_alive,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn launcher() -> PathBuf {
    launcher_binary(Profile::Debug)
}

fn get(kubeconfig: &Path, what: &str, path: &str) -> String {
    let out = kubectl(
        kubeconfig,
        &["get", what, "demo", "-o", &format!("jsonpath={path}")],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The demo VM's run directory (`<data>/vmis/default/demo-<uid8>`).
fn run_dir(data: &Path) -> Option<PathBuf> {
    std::fs::read_dir(data.join("vmis").join("default"))
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("demo-"))
        .map(|e| e.path())
}

/// The launcher's `status` reply, raw (`{"op":"status"}` on its control socket).
fn status(data: &Path) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(run_dir(data)?.join("control.sock")).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"{\"op\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// What the guest printed since its launcher started (the console's scroll-back).
fn console(data: &Path) -> String {
    let Some(dir) = run_dir(data) else {
        return String::new();
    };
    let Ok(mut s) = UnixStream::connect(dir.join("console.sock")) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut text = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// `up` on `data`; killed (and reaped) if the test fails half way.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn up(data: &Path, launcher: &Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .arg("up")
        .arg("--data-dir")
        .arg(data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            "local",
            "--no-kubelet",
        ])
        .arg("--launcher")
        .arg(launcher)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-local up");
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    // One JSON line on stdout once the whole plane is ready.
    let ready: serde_json::Value = serde_json::from_str(&first).expect("the ready line is JSON");
    assert!(ready["kubeconfig"].is_string(), "{first}");
    Up(child)
}

#[test]
fn kill_9_of_up_and_a_restart_keep_the_guest_running_on_its_launcher() {
    let launcher = launcher();
    let data = kubevirt_testsupport::tempdir("up-restart");
    let image = demo_image(&data);
    let kubeconfig = data.join("kubeconfig");

    let mut first = up(&data, &launcher);
    let vm = std::fs::read_to_string(root().join("examples/vm-demo.yaml"))
        .unwrap()
        .replace("oci:target/demo-image:demo", &image);
    let out = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&vm));
    assert!(out.status.success(), "{out:?}");
    eventually("the VMI Running", || {
        (get(&kubeconfig, "vmi", "{.status.phase}") == "Running").then_some(())
    });
    let uid = get(&kubeconfig, "vmi", "{.metadata.uid}");
    let before = eventually("the launcher's status", || status(&data));
    let pid = before["launcher"]["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .expect("its pid");
    assert_eq!(before["launcher"]["uid"], uid.as_str());
    eventually("the guest booted", || {
        console(&data)
            .contains("kubevirt-rs demo guest")
            .then_some(())
    });

    // kill -9 of the whole `up`: API server, controllers and node agent at once.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(process_alive(pid), "the launcher outlives `up`");

    let second = up(&data, &launcher);
    // A few polls of the restarted agent later: still Running, same VMI, same launcher.
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..4 {
        assert_eq!(get(&kubeconfig, "vmi", "{.status.phase}"), "Running");
        assert_eq!(get(&kubeconfig, "vmi", "{.metadata.uid}"), uid);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        get(&kubeconfig, "vm", "{.status.printableStatus}"),
        "Running"
    );
    let after = status(&data).expect("the launcher answers");
    assert_eq!(
        after["launcher"]["pid"].as_u64(),
        Some(u64::from(pid)),
        "{after}"
    );
    assert_eq!(after["restarts"], 0, "the guest was not restarted: {after}");
    let dir = run_dir(&data).unwrap();
    assert_eq!(launchers_in(&dir), vec![pid], "one launcher for the VMI");
    let text = console(&data);
    assert_eq!(
        text.matches("kubevirt-rs demo guest").count(),
        1,
        "the guest booted once: {text}"
    );

    // Deleting the VM powers the adopted guest off (ACPI button), well before the 30 s grace.
    let asked = Instant::now();
    let out = kubectl(
        &kubeconfig,
        &["delete", "vm", "demo", "--wait=true", "--timeout=60s"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    eventually("the VMI gone", || {
        let out = kubectl(&kubeconfig, &["get", "vmi", "-o", "name"], None);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .is_empty()
            .then_some(())
    });
    eventually("the launcher gone", || (!process_alive(pid)).then_some(()));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "{took:?}: not a graceful power-off"
    );
    assert!(run_dir(&data).is_none(), "the run directory is removed");

    let mut second = second;
    // SAFETY: kill(2) on the child this test spawned and has not reaped.
    unsafe {
        libc::kill(second.0.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(second.0.wait().unwrap().success());
}
