//! The launcher's confinement: while the demo guest runs, every thread of the launcher is under
//! a seccomp filter with no capabilities; a forbidden system call ends the process naming the
//! thread and the call; a run without --run-dir leaves nothing in the temp directory.

mod common;

use common::{Launcher, tempdir};
use std::path::Path;
use std::process::Command;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_kubevirt-launcher");
/// 128 + SIGSYS.
const VIOLATION: i32 = 159;

/// The shipped demo VMI, its image written under `dir`.
fn demo_vmi(dir: &Path) -> std::path::PathBuf {
    let image = dir.join("image");
    kubevirt_demo_guest::write_image(&image).expect("write the demo image");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vmi-demo.yaml"),
    )
    .unwrap();
    let vmi = shipped.replace(
        "oci:target/demo-image:demo",
        &format!("oci:{}:demo", image.display()),
    );
    let file = dir.join("vmi.yaml");
    std::fs::write(&file, vmi).unwrap();
    file
}

/// `(name, Seccomp mode, CapEff)` of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((comm.trim().to_string(), field("Seccomp:"), field("CapEff:")));
    }
    out
}

#[test]
fn every_launcher_thread_is_filtered_and_without_capabilities_while_the_guest_runs() {
    let dir = tempdir("seccomp-demo");
    let file = demo_vmi(&dir);
    let mut cmd = Command::new(LAUNCHER);
    cmd.args(["run", file.to_str().unwrap()])
        .args(["--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()]);
    let mut launcher = Launcher::spawn(cmd);
    launcher.expect("demo# ");
    // The console socket and the control socket have had clients: their threads exist.
    let mut console =
        std::os::unix::net::UnixStream::connect(dir.join("run/console.sock")).unwrap();
    std::io::Write::write_all(&mut console, b"uname\r").unwrap();
    launcher.expect("kubevirt-rs-demo demo 1.0 x86_64");
    let mut control =
        std::os::unix::net::UnixStream::connect(dir.join("run/control.sock")).unwrap();
    std::io::Write::write_all(&mut control, b"{\"op\":\"status\"}\n").unwrap();
    let mut reply = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&control), &mut reply).unwrap();
    assert!(reply.contains("\"Running\""), "{reply}");
    let all = threads(launcher.pid());
    let names: Vec<&str> = all.iter().map(|t| t.0.as_str()).collect();
    for expected in [
        "vcpu0",
        "virtio-blk",
        "control-accept",
        "console-out",
        "stdin",
    ] {
        assert!(
            names.contains(&expected),
            "no {expected} thread in {names:?}"
        );
    }
    for (name, seccomp, caps) in &all {
        assert_eq!(seccomp, "2", "thread {name} is not filtered: {all:?}");
        assert_eq!(caps, "0000000000000000", "thread {name} has capabilities");
    }
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(
        status.success(),
        "the guest runs to its end under the filters: {out}"
    );
    assert!(out.contains("demo: the VMI ended phase=Succeeded"), "{out}");
}

/// The VMI's uid in the JSON log test.
const UID: &str = "4f1b0c9e-7d2a-4e4b-9a53-0c1d2e3f4a5b";

/// A confined launcher's log with `--log-format json`: every line on stderr is one JSON object
/// with upstream virt-launcher's keys and the VMI's identity, including the lines its main
/// thread writes under its filter (the VM running, SIGTERM's power button, the end). A
/// forbidden call while logging would end the process with 159 instead.
#[test]
fn a_confined_launchers_json_log_lines_parse_with_upstreams_keys() {
    let dir = tempdir("seccomp-json");
    let file = demo_vmi(&dir);
    let yaml = std::fs::read_to_string(&file).unwrap().replacen(
        "  name: demo\n",
        &format!("  name: demo\n  namespace: default\n  uid: {UID}\n"),
        1,
    );
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = Command::new(LAUNCHER);
    cmd.env_remove("RUST_LOG")
        .args(["run", "--log-format", "json", file.to_str().unwrap()])
        .args(["--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()]);
    let mut launcher = Launcher::spawn(cmd);
    launcher.expect("demo# ");
    launcher.signal(libc::SIGTERM);
    let (status, out) = launcher.wait();
    let log = launcher.messages();
    assert!(status.success(), "{out}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{log}"))
        })
        .collect();
    for line in &lines {
        assert_eq!(line["component"], "virt-launcher", "{line}");
        assert_eq!(line["kind"], "VirtualMachineInstance", "{line}");
        assert_eq!(line["namespace"], "default", "{line}");
        assert_eq!(line["name"], "demo", "{line}");
        assert_eq!(line["uid"], UID, "{line}");
        for key in ["level", "timestamp", "msg", "pos"] {
            assert!(line[key].is_string(), "no {key}: {line}");
        }
        let ts = line["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 27, "RFC 3339 UTC: {line}");
    }
    let by_msg = |msg: &str| {
        lines
            .iter()
            .find(|l| l["msg"].as_str().is_some_and(|m| m.starts_with(msg)))
            .unwrap_or_else(|| panic!("no {msg:?} line in:\n{log}"))
    };
    let running = by_msg("the VM runs");
    assert_eq!(running["level"], "info");
    assert_eq!(running["phase"], "Running");
    assert!(
        running["control"]
            .as_str()
            .unwrap()
            .ends_with("control.sock")
    );
    let terminating = by_msg("terminating: pressed the power button");
    assert!(
        terminating["grace_period_seconds"].is_u64(),
        "{terminating}"
    );
    let ended = by_msg("the VMI ended");
    assert_eq!(ended["phase"], "Succeeded", "{ended}");
    assert_eq!(ended["reason"], "the guest powered off", "{ended}");
}

/// Every kind's filter lets its thread log: the probe confines itself, then writes its first
/// events (the log's per-thread set-up, the timestamp, the write to stderr all under the
/// filter) as JSON lines, then makes an allowed call.
#[test]
fn every_kind_of_confined_thread_can_log() {
    for kind in [
        "vcpu",
        "worker",
        "control",
        "console",
        "dhcp",
        "main",
        "snapshot",
        "migration",
    ] {
        let out = Command::new(LAUNCHER)
            .env_remove("RUST_LOG")
            .args(["seccomp-probe", "--log-format", "json", "--kind", kind])
            .args(["--syscall", &libc::SYS_getpid.to_string()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{kind}: {:?} {err}", out.status);
        let lines: Vec<serde_json::Value> = err
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{kind}: {e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{kind}: {err}");
        assert_eq!(lines[0]["level"], "info", "{kind}: {err}");
        assert_eq!(lines[1]["level"], "warning", "{kind}: {err}");
        assert_eq!(lines[0]["syscall"], libc::SYS_getpid, "{kind}: {err}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("getpid (39) allowed"),
            "{kind}"
        );
    }
}

/// The probe installs one kind's filter and makes one call.
fn probe(kind: &str, syscall: i64) -> std::process::Output {
    Command::new(LAUNCHER)
        .args(["seccomp-probe", "--kind", kind, "--syscall"])
        .arg(syscall.to_string())
        .output()
        .unwrap()
}

#[test]
fn a_forbidden_system_call_ends_the_process_naming_the_thread_and_the_call() {
    for kind in ["vcpu", "worker", "control", "console", "dhcp", "main"] {
        let out = probe(kind, libc::SYS_execve);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(VIOLATION), "{kind}: {err}");
        assert!(
            err.contains(&format!(
                ", {kind} filter) made the forbidden system call execve (59)"
            )),
            "{kind}: {err}"
        );
    }
    // Per kind: the vCPU opens no sockets and no files for writing, the workers do no ioctls.
    let out = probe("vcpu", libc::SYS_socket);
    assert_eq!(out.status.code(), Some(VIOLATION));
    assert!(String::from_utf8_lossy(&out.stderr).contains("socket (41)"));
    let out = probe("worker", libc::SYS_ioctl);
    assert_eq!(out.status.code(), Some(VIOLATION));
    // And an allowed call passes.
    let out = probe("worker", libc::SYS_getpid);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("getpid (39) allowed"));
}

#[test]
fn a_run_without_a_run_dir_leaves_nothing_in_the_temp_directory() {
    let dir = tempdir("seccomp-tmp");
    let file = demo_vmi(&dir);
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new(LAUNCHER);
    cmd.env("TMPDIR", &tmp)
        .args(["run", file.to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()]);
    let mut launcher = Launcher::spawn(cmd);
    launcher.expect("demo# ");
    let during: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert_eq!(
        during.len(),
        1,
        "the run directory is in TMPDIR while it runs"
    );
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
