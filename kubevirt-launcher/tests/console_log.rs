//! `kubevirt-launcher console-log` (the pod's `guest-console-log` container) as a process: it
//! waits for the log to appear, prints it as it grows, follows it across a rotation at the real
//! 4 MiB limit without losing or repeating a byte, and exits 0 on SIGTERM. It also ends, exit
//! 0, once the launcher in its pod (`serve`, sharing the run directory) is gone — a kill -9
//! included —, after printing what was written last; it waits for a launcher that has not
//! taken the directory yet, but only up to `--launcher-wait`.

mod common;

use common::{Launcher, control_client, serve_command, tempdir};
use kubevirt_launcher::console::log::{LOG_LIMIT, RotatingLog, rotated};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn console_log_waits_for_the_file_follows_a_rotation_and_exits_0_on_sigterm() {
    let dir = tempdir("console-log");
    let path = dir.join("console.log");
    let mut follower = Launcher::spawn({
        let mut c = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"));
        c.args(["console-log", "--file", path.to_str().unwrap()]);
        c
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!path.exists());

    let mut log = RotatingLog::open(&path, LOG_LIMIT).unwrap();
    log.write(b"boot: first line\n").unwrap();
    follower.expect("boot: first line");
    // Past 4 MiB: the next write rotates.
    let line = [b'x'; 1023];
    let mut written = b"boot: first line\n".len();
    while (written as u64) < LOG_LIMIT {
        log.write(&line).unwrap();
        log.write(b"\n").unwrap();
        written += 1024;
    }
    log.write(b"after the rotation\n").unwrap();
    assert!(rotated(&path).exists(), "the log was not rotated");
    let rotated_len = std::fs::metadata(rotated(&path)).unwrap().len();
    assert!(rotated_len >= LOG_LIMIT, "rotated at {rotated_len} bytes");
    let current = std::fs::read_to_string(&path).unwrap();
    assert!(current.len() < 64, "the new log: {current:?}");
    follower.expect("after the rotation");
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = written + "after the rotation\n".len();
    loop {
        let out = follower.output();
        let console = out.split("\n--- launcher messages ---\n").next().unwrap();
        if console.len() == want {
            assert!(console.starts_with("boot: first line\nxxx"));
            assert!(console.ends_with("xxx\nafter the rotation\n"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "printed {} bytes, written {want}",
            console.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    follower.signal(libc::SIGTERM);
    let (status, out) = follower.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        &out[out.len().saturating_sub(500)..]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn console_log(file: &std::path::Path, extra: &[&str]) -> Launcher {
    Launcher::spawn({
        let mut c = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"));
        c.args(["console-log", "--file", file.to_str().unwrap()]);
        c.args(extra);
        c
    })
}

#[test]
fn console_log_ends_with_its_launcher_even_killed_and_waits_for_one_a_bounded_time() {
    let dir = tempdir("console-log-end");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let log = run.join("console.log");

    // No launcher ever takes the directory: it ends after --launcher-wait, not before.
    let started = Instant::now();
    let mut alone = console_log(&log, &["--launcher-wait", "2"]);
    assert_eq!(
        alone.exit_within(Duration::from_secs(1)),
        None,
        "ended early"
    );
    let status = alone.exit_within(Duration::from_secs(10)).expect("it ends");
    assert_eq!(status.code(), Some(0), "{}", alone.output());
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        alone
            .messages()
            .contains("no launcher took the run directory in time")
    );

    // A launcher that comes later is waited for, then followed while it lives.
    let mut follower = console_log(&log, &[]);
    assert_eq!(follower.exit_within(Duration::from_secs(1)), None);
    let mut launcher = Launcher::spawn(serve_command(&dir, ("default", "d"), "uid-1", &[]));
    control_client(&dir);
    std::fs::write(&log, "the guest's last words\n").unwrap();
    follower.expect("the guest's last words");
    assert_eq!(
        follower.exit_within(Duration::from_secs(2)),
        None,
        "ended with its launcher alive"
    );

    // kill -9 of the launcher: nothing is cleaned up, the kernel drops its lock; console-log
    // prints what came last and ends, exit 0.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"written just before the end\n"))
        .unwrap();
    launcher.signal(libc::SIGKILL);
    launcher
        .exit_within(Duration::from_secs(10))
        .expect("killed");
    let status = follower
        .exit_within(Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "still running after its launcher died:\n{}",
                follower.output()
            )
        });
    assert_eq!(status.code(), Some(0), "{}", follower.output());
    let out = follower.output();
    assert!(out.contains("written just before the end"), "{out}");
    assert!(follower.messages().contains("the launcher ended"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
