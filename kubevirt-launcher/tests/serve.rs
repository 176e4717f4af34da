//! `kubevirt-launcher serve` as the compute container of a virt-launcher pod runs it (with its
//! seccomp filters): it waits on its control socket, refuses another VMI's `start`, runs its own
//! (the demo guest) with the console in console.log (not stdout), `console-log` prints that
//! log, and SIGTERM shuts the guest down gracefully with a final.json. A waiting launcher ends
//! at once, exit code 0, on `stop` or SIGTERM.

mod common;

use common::{
    Launcher, control_client, demo_image, demo_vmi, serve_command, tempdir, vmi_json,
    wait_for_phase,
};
use kubevirt_launcher_protocol::{Done, ExitStatus, FinalStatus, Phase, Request, StartRequest};
use std::process::Command;
use std::time::{Duration, Instant};

const UID: &str = "6a1c0f7e-serve-test";

fn start(vmi: serde_json::Value, network_prepared: bool) -> Request {
    Request::Start(Box::new(StartRequest {
        vmi,
        network_prepared,
        restore_from: None,
    }))
}

#[test]
fn serve_waits_refuses_another_uid_runs_its_vmi_and_ends_gracefully_on_sigterm() {
    let dir = tempdir("serve");
    let image = demo_image(&dir);
    let yaml = demo_vmi(
        "served",
        &image,
        "16Mi",
        "autoattachPodInterface: false",
        "terminationGracePeriodSeconds: 120",
    );
    let mut launcher = Launcher::spawn(serve_command(&dir, ("default", "served"), UID, &[]));
    let client = control_client(&dir);

    let waiting = client.status().expect("status while waiting");
    assert_eq!(waiting.phase, Phase::Waiting);
    let id = waiting.launcher.expect("the launcher's identity");
    assert_eq!(
        (id.namespace.as_str(), id.name.as_str(), id.uid.as_str()),
        ("default", "served", UID)
    );
    assert_eq!(id.pid, launcher.pid());
    let pause = client.call::<Done>(&Request::Pause).unwrap_err();
    assert!(pause.to_string().contains("waiting"), "{pause}");

    let wrong = client
        .call::<Done>(&start(vmi_json(&yaml, "another-uid"), false))
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains(UID) && wrong.contains("another-uid"),
        "{wrong}"
    );
    assert_eq!(client.status().unwrap().phase, Phase::Waiting);

    client
        .call::<Done>(&start(vmi_json(&yaml, UID), false))
        .expect("start");
    let running = wait_for_phase(&client, Phase::Running);
    assert_eq!(running.launcher.map(|l| l.uid).as_deref(), Some(UID));

    // The console: in console.log, printed by console-log, never on the launcher's stdout.
    let log = dir.join("run/console.log");
    let mut follower = Launcher::spawn({
        let mut c = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"));
        c.args(["console-log", "--file", log.to_str().unwrap()]);
        c
    });
    follower.expect(kubevirt_demo_guest::BANNER);
    follower.expect("demo# ");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(kubevirt_demo_guest::BANNER)
    );
    launcher.expect("served: the VM runs phase=Running");
    assert!(
        !launcher.output().contains(kubevirt_demo_guest::BANNER),
        "the console went to stdout or stderr:\n{}",
        launcher.output()
    );
    let again = client
        .call::<Done>(&start(vmi_json(&yaml, UID), false))
        .unwrap_err();
    assert!(again.to_string().contains("already runs"), "{again}");

    let t = Instant::now();
    launcher.signal(libc::SIGTERM);
    follower.expect("power button pressed: shutting down");
    let (status, out) = launcher.wait();
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(
        out.contains("served: the VMI ended phase=Succeeded reason=the guest powered off"),
        "{out}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{out}");
    let last = FinalStatus::read(&dir.join("run"))
        .unwrap()
        .expect("final.json");
    assert_eq!(last.exit, ExitStatus::Succeeded);

    // console-log ends by itself once its launcher has (the launcher's lifetime lock is free;
    // its SIGTERM is console_log.rs's): racing it with a SIGTERM here found an exited process.
    let status = follower
        .exit_within(Duration::from_secs(30))
        .expect("console-log ends with its launcher");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_waiting_launcher_exits_at_once_on_stop_or_sigterm() {
    for how in ["stop", "sigterm"] {
        let dir = tempdir(&format!("serve-{how}"));
        let mut cmd = serve_command(&dir, ("default", "w"), UID, &[]);
        cmd.env_remove("RUST_LOG").args(["--log-format", "json"]);
        let mut launcher = Launcher::spawn(cmd);
        let client = control_client(&dir);
        let t = Instant::now();
        if how == "stop" {
            client.stop().expect("stop while waiting");
        } else {
            launcher.signal(libc::SIGTERM);
        }
        let (status, out) = launcher.wait();
        assert_eq!(status.code(), Some(0), "{how}: {out}");
        assert!(t.elapsed() < Duration::from_secs(5), "{how}: {out}");
        let last = FinalStatus::read(&dir.join("run"))
            .unwrap()
            .expect("final.json");
        assert_eq!(last.exit, ExitStatus::Succeeded, "{how}");
        // Its log: JSON lines naming the VMI of its flags, saying what it waited for and why
        // it ended.
        let log = launcher.messages();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{how}: {e}: {l}")))
            .collect();
        for line in &lines {
            assert_eq!(
                (&line["namespace"], &line["name"], &line["uid"]),
                (&"default".into(), &"w".into(), &UID.into()),
                "{how}: {line}"
            );
            assert_eq!(line["component"], "virt-launcher", "{how}: {line}");
        }
        let msgs: Vec<&str> = lines.iter().filter_map(|l| l["msg"].as_str()).collect();
        assert_eq!(msgs.first(), Some(&"waiting for start"), "{how}: {log}");
        assert!(
            lines[0]["socket"]
                .as_str()
                .is_some_and(|s| s.ends_with("run/control.sock")),
            "{how}: {log}"
        );
        let ended = lines.last().unwrap();
        if how == "stop" {
            assert_eq!(
                ended["msg"], "asked to end before the VMI started: exiting",
                "{log}"
            );
            assert_eq!(ended["op"], "stop", "{log}");
        } else {
            assert_eq!(ended["msg"], "terminated before the VMI started", "{log}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
