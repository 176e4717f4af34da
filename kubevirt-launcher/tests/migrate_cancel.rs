//! `cancelMigration` between two confined launcher processes: a migration held in flight by a
//! 1 MiB/s bandwidth limit (and 24 MiB of guest RAM that is never zero) is cancelled while it
//! copies; the source says the migration failed
//! because it was cancelled, the guest goes on counting there (no second boot) and the target
//! gives up and exits. Asking again is answered the same; a launcher with no migration, or
//! whose migration ended by itself, says there is nothing to cancel.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Launcher, demo_vmi, run_command, tempdir};
use kubevirt_launcher_protocol::{MigrateRequest, Phase, Request};

/// 24 MiB of never-zero guest RAM (an initrd the demo guest ignores): at 1 MiB/s its first
/// copy round alone takes some 24 s, on any machine.
const BALLAST: usize = 24 << 20;

fn demo(dir: &Path) -> String {
    let image = kubevirt_testsupport::demo_image_with_ballast(dir, BALLAST);
    let vmi = demo_vmi(
        "stayer",
        &image,
        "64Mi",
        "autoattachPodInterface: false",
        "",
    );
    vmi.replace(
        "kernelPath: /boot/demo.elf",
        "kernelPath: /boot/demo.elf, initrdPath: /boot/ballast.img",
    )
}

#[test]
fn a_migration_cancelled_in_flight_leaves_the_guest_running_on_the_source() {
    let src = tempdir("cancel-source");
    let dst = tempdir("cancel-target");
    let vmi = demo(src.path());
    let mut source = Launcher::spawn(run_command(src.path(), &vmi, &[]));
    source.expect("demo# ");
    source.type_text("count\r");
    source.expect("count 1");
    let control = common::control_client(src.path());

    // Nothing to cancel yet: a clear refusal that changes nothing.
    let err = control
        .act(&Request::CancelMigration)
        .expect_err("no migration to cancel")
        .to_string();
    assert!(err.contains("no migration is under way"), "{err}");
    assert!(control.status().unwrap().migration.is_none());

    let (mut target, addr) = common::incoming_target(dst.path(), &vmi, &[]);
    let slow = MigrateRequest {
        bandwidth_mib_per_sec: Some(1),
        ..MigrateRequest::new(addr)
    };
    control
        .act(&Request::Migrate(Box::new(slow)))
        .expect("migrate");
    // In flight: copying RAM at 1 MiB/s (the guest's kernel alone takes seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    let copying = loop {
        let m = control.status().unwrap().migration.expect("a migration");
        if m.phase == "PreCopy" && m.bytes_sent > 0 {
            break m;
        }
        assert!(
            !m.is_done(),
            "the migration ended before it was cancelled: {m:?}"
        );
        assert!(Instant::now() < deadline, "never copying: {m:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(copying.bytes_sent < copying.memory_total, "{copying:?}");
    control.act(&Request::CancelMigration).expect("cancel");
    control
        .act(&Request::CancelMigration)
        .expect("cancelling again is answered the same");

    let outcome = common::migration_outcome(&control);
    assert_eq!(outcome.phase, "Failed", "{outcome:?}");
    let error = outcome.error.clone().unwrap_or_default();
    assert!(error.contains("cancelled"), "{outcome:?}");
    control
        .act(&Request::CancelMigration)
        .expect("a cancelled migration is cancelled still");

    // The guest runs on in the source, where it was: no second boot.
    let status = control.status().unwrap();
    assert_eq!(
        (status.phase, status.paused, status.restarts),
        (Phase::Running, false, 0)
    );
    source.type_text("count\r");
    let seen = source.expect("count 2");
    assert_eq!(
        seen.matches(kubevirt_demo_guest::BANNER).count(),
        1,
        "{seen}"
    );

    // The target discarded what it got and failed its launch.
    let (status, out) = target.wait();
    assert!(
        !status.success(),
        "the target must not run the guest:\n{out}"
    );

    // A migration that ended by itself is nothing to cancel.
    let nowhere = format!("unix:{}", src.path().join("nobody.sock").display());
    control
        .act(&Request::Migrate(Box::new(MigrateRequest::new(nowhere))))
        .expect("migrate is taken, and fails on its own thread");
    let failed = common::migration_outcome(&control);
    assert_eq!(failed.phase, "Failed", "{failed:?}");
    let err = control
        .act(&Request::CancelMigration)
        .expect_err("a failed migration")
        .to_string();
    assert!(
        err.contains("already failed: there is nothing to cancel"),
        "{err}"
    );

    control.stop().expect("stop");
    let (status, _) = source.wait();
    assert_eq!(status.code(), Some(0));
}
