//! Live migration between two confined launcher processes (issue 12, `migrate`): the demo
//! guest counts on the source's console, the source is asked to `migrate` to a launcher started
//! with `--incoming`, and the guest answers on the new launcher's console with its count
//! going on (no second boot) while the source exits with `Migrated`; the same into a `serve
//! --incoming` launcher (a target pod's) over TCP with a bandwidth limit, its console on its
//! socket. A migration to a target that is not listening fails in the source's status and the
//! guest runs on there.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Launcher, demo_image, demo_vmi, run_command, tempdir};
use kubevirt_launcher_protocol::{ExitStatus, FinalStatus, MigrateRequest, Phase, Request};

fn demo(dir: &Path) -> String {
    let image = demo_image(dir);
    demo_vmi("mover", &image, "16Mi", "autoattachPodInterface: false", "")
}

#[test]
fn a_guest_migrates_to_a_new_launcher_and_counts_on_there() {
    let src = tempdir("migrate-source");
    let dst = tempdir("migrate-target");
    let vmi = demo(src.path());
    let mut source = Launcher::spawn(run_command(src.path(), &vmi, &[]));
    source.expect("demo# ");
    for n in 1..=3 {
        source.type_text("count\r");
        source.expect(&format!("count {n}"));
    }

    let (mut target, addr) = common::incoming_target(dst.path(), &vmi, &[]);

    let control = common::control_client(src.path());
    control
        .act(&Request::Migrate(Box::new(MigrateRequest::new(
            addr.clone(),
        ))))
        .expect("migrate");
    // Until it exits, the source says the guest runs, or that it went to the target: a
    // launcher finishing after the hand-over (its VM ended, phase Succeeded) says so, or the
    // node agent would take its phase for the VMI's.
    let mut finishing = 0;
    while let Ok(s) = control.status() {
        if s.phase != Phase::Running {
            assert!(s.migrated_away && s.phase == Phase::Succeeded, "{s:?}");
            finishing += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("{finishing} statuses of the source finishing after the hand-over");
    let (status, out) = source.wait();
    assert_eq!(
        status.code(),
        Some(ExitStatus::Migrated.code().into()),
        "the source exits 'migrated':\n{out}"
    );
    assert!(
        out.contains("mover: the VMI ended phase=Succeeded reason=the VM was migrated"),
        "{out}"
    );
    let last = FinalStatus::read(&src.path().join("run"))
        .expect("final status")
        .expect("a final status was left");
    assert_eq!(last.exit, ExitStatus::Migrated, "{last:?}");

    let target_control = common::control_client(dst.path());
    common::wait_for_phase(&target_control, Phase::Running);
    target.type_text("count\r");
    let seen = target.expect("count 4");
    assert!(
        !seen.contains(kubevirt_demo_guest::BANNER),
        "the migrated guest booted again:\n{seen}"
    );
    assert_eq!(target_control.status().unwrap().restarts, 0);
    target.type_text("poweroff\r");
    let (status, out) = target.wait();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("mover: the VMI ended phase=Succeeded"),
        "{out}"
    );
}

#[test]
fn a_migration_to_a_target_that_is_not_listening_fails_and_the_guest_runs_on() {
    let src = tempdir("migrate-nowhere");
    let vmi = demo(src.path());
    let mut source = Launcher::spawn(run_command(src.path(), &vmi, &[]));
    source.expect("demo# ");
    source.type_text("count\r");
    source.expect("count 1");
    let control = common::control_client(src.path());
    let nowhere = format!("unix:{}", src.path().join("nobody.sock").display());
    control
        .act(&Request::Migrate(Box::new(MigrateRequest::new(nowhere))))
        .expect("migrate is taken, and fails on its own thread");
    let outcome = common::migration_outcome(&control);
    assert_eq!(outcome.phase, "Failed", "{outcome:?}");
    let error = outcome.error.unwrap_or_default();
    assert!(error.contains("connecting to unix:"), "{error}");
    // The guest runs on in the source.
    assert_eq!(control.status().unwrap().phase, Phase::Running);
    source.type_text("count\r");
    source.expect("count 2");
    control.stop().expect("stop");
    let (status, _) = source.wait();
    assert_eq!(status.code(), Some(0));
}

const TARGET_UID: &str = "7b2d1e8f-migrate-target";

/// Types `text` on the launcher's console socket and reads until `want` shows.
fn console_round_trip(run_dir: &Path, text: &str, want: &str) -> String {
    use std::io::{Read, Write};
    let mut console = std::os::unix::net::UnixStream::connect(run_dir.join("console.sock"))
        .expect("console socket");
    console
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    console.write_all(text.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?} on the console: {seen}"
        );
        if let Ok(n) = console.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    seen
}

#[test]
fn a_serve_target_in_its_pod_receives_the_guest_over_tcp() {
    let src = tempdir("migrate-tcp-source");
    let dst = tempdir("migrate-tcp-target");
    let vmi = demo(src.path());
    let mut source = Launcher::spawn(run_command(src.path(), &vmi, &[]));
    source.expect("demo# ");
    for n in 1..=2 {
        source.type_text("count\r");
        source.expect(&format!("count {n}"));
    }

    // The target pod's launcher: `serve --incoming`, started by the node agent's `start`.
    let port = kubevirt_testsupport::free_port().expect("a free port on the loopback");
    let addr = format!("tcp:127.0.0.1:{port}");
    let mut cmd = common::serve_command(dst.path(), ("default", "mover"), TARGET_UID, &[]);
    cmd.args(["--incoming", &addr]);
    let mut target = Launcher::spawn(cmd);
    let target_control = common::control_client(dst.path());
    target_control
        .act(&Request::Start(Box::new(
            kubevirt_launcher_protocol::StartRequest {
                vmi: common::vmi_json(&vmi, TARGET_UID),
                network_prepared: false,
                restore_from: None,
            },
        )))
        .expect("start");
    target.expect("waiting for the migration source address=tcp:");

    let control = common::control_client(src.path());
    control
        .act(&Request::Migrate(Box::new(MigrateRequest {
            bandwidth_mib_per_sec: Some(512),
            ..MigrateRequest::new(addr.clone())
        })))
        .expect("migrate");
    let (status, out) = source.wait();
    assert_eq!(
        status.code(),
        Some(ExitStatus::Migrated.code().into()),
        "{out}"
    );
    common::wait_for_phase(&target_control, Phase::Running);
    let seen = console_round_trip(&dst.path().join("run"), "count\r", "count 3");
    assert!(!seen.contains(kubevirt_demo_guest::BANNER), "{seen}");
    target_control.stop().expect("stop");
    let (status, out) = target.wait();
    assert!(status.success(), "{out}");
}

#[test]
fn a_serve_source_exits_0_after_migrating_so_its_pod_ends_completed() {
    let src = tempdir("migrate-serve-source");
    let dst = tempdir("migrate-serve-target");
    let vmi = demo(src.path());
    // The source pod's launcher: `serve`, started by its node agent's `start`.
    let mut source = Launcher::spawn(common::serve_command(
        src.path(),
        ("default", "mover"),
        "5a1c-migrate-source",
        &[],
    ));
    let control = common::control_client(src.path());
    control
        .act(&Request::Start(Box::new(
            kubevirt_launcher_protocol::StartRequest {
                vmi: common::vmi_json(&vmi, "5a1c-migrate-source"),
                network_prepared: false,
                restore_from: None,
            },
        )))
        .expect("start");
    common::wait_for_phase(&control, Phase::Running);

    let (mut target, addr) = common::incoming_target(dst.path(), &vmi, &[]);
    control
        .act(&Request::Migrate(Box::new(MigrateRequest::new(addr))))
        .expect("migrate");
    let (status, out) = source.wait();
    assert_eq!(status.code(), Some(0), "a migrated serve exits 0:\n{out}");
    let last = FinalStatus::read(&src.path().join("run"))
        .expect("final status")
        .expect("a final status was left");
    assert_eq!(last.exit, ExitStatus::Migrated, "{last:?}");

    common::wait_for_phase(&common::control_client(dst.path()), Phase::Running);
    target.type_text("count\r");
    target.expect("count 1");
    target.type_text("poweroff\r");
    let (status, out) = target.wait();
    assert!(status.success(), "{out}");
}
