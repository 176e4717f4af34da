//! Memory-state snapshots through the launcher (issue 17, part 3): the confined launcher
//! running the demo guest saves it on the `snapshot` control op, and a new launcher process
//! started with `--restore-from` resumes the guest where it was — its console answers at once,
//! with no second boot (no banner again) — and powers it off normally.

mod common;

use common::{Launcher, demo_image, demo_vmi, run_command, tempdir};
use kubevirt_launcher_protocol::Phase;

fn demo(dir: &std::path::Path) -> String {
    let image = demo_image(dir);
    demo_vmi(
        "snapper",
        &image,
        "16Mi",
        "autoattachPodInterface: false",
        "",
    )
}

#[test]
fn a_snapshot_resumes_in_a_new_launcher_without_booting_again() {
    let dir = tempdir("memory-snapshot");
    let vmi = demo(&dir);
    let mut first = Launcher::spawn(run_command(&dir, &vmi, &[]));
    first.expect("demo# ");

    let control = common::control_client(&dir);
    let reply = control.snapshot("before-stop").expect("snapshot");
    let snapshot = dir.join("run/snapshots/before-stop");
    assert_eq!(reply.directory, snapshot.display().to_string(), "{reply:?}");
    assert!(reply.memory_bytes_written > 0, "{reply:?}");
    assert!(snapshot.join(kubevirt_vmm::snapshot::STATE_FILE).is_file());
    // The guest was resumed after the cut: it still answers.
    assert!(!control.status().unwrap().paused);
    first.type_text("uname\r");
    first.expect("kubevirt-rs-demo demo 1.0 x86_64");
    control.stop().expect("stop");
    let (_, out) = first.wait();
    assert_eq!(out.matches(kubevirt_demo_guest::BANNER).count(), 1, "{out}");

    let mut cmd = run_command(&dir, &vmi, &[]);
    cmd.args(["--restore-from", snapshot.to_str().unwrap()]);
    let mut second = Launcher::spawn(cmd);
    let control = common::control_client(&dir);
    common::wait_for_phase(&control, Phase::Running);
    // The guest's own answer (it prints its banner before its first prompt, so a guest that
    // booted again would show the banner before this).
    second.type_text("uname\r");
    let out = second.expect("kubevirt-rs-demo demo 1.0 x86_64");
    assert!(
        !out.contains(kubevirt_demo_guest::BANNER),
        "the restored guest booted again:\n{out}"
    );
    let status = control.status().unwrap();
    assert_eq!(status.restarts, 0, "{status:?}");
    second.type_text("poweroff\r");
    let (status, out) = second.wait();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("snapper: the VMI ended phase=Succeeded"),
        "{out}"
    );
}

#[test]
fn bad_snapshot_requests_and_restores_are_refused_with_reasons() {
    let dir = tempdir("memory-snapshot-bad");
    let vmi = demo(&dir);
    let mut launcher = Launcher::spawn(run_command(&dir, &vmi, &[]));
    launcher.expect("demo# ");
    let reply = raw_request(&dir, r#"{"op":"snapshot","name":"../escape"}"#);
    assert!(
        reply.contains("snapshot: name must be"),
        "a path-like name is refused: {reply}"
    );
    assert!(!dir.join("escape").exists() && !dir.join("run/escape").exists());
    common::control_client(&dir).stop().expect("stop");
    launcher.wait();

    // Restoring from a directory that holds no snapshot fails the launch, saying why.
    let mut cmd = run_command(&dir, &vmi, &[]);
    cmd.args(["--restore-from", dir.join("nothing").to_str().unwrap()]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("nothing"),
        "the error names the directory: {stderr}"
    );
}

/// Sends `line` to the launcher's control socket as typed; returns the reply line.
fn raw_request(dir: &std::path::Path, line: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let _ = common::control_client(dir);
    let mut conn = std::os::unix::net::UnixStream::connect(dir.join("run/control.sock")).unwrap();
    writeln!(conn, "{line}").unwrap();
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply).unwrap();
    reply
}
