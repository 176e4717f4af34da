//! `kubevirt-launcher console-log` (the pod's `guest-console-log` container) as a process: it
//! waits for the log to appear, prints it as it grows, follows it across a rotation at the real
//! 4 MiB limit without losing or repeating a byte, and exits 0 on SIGTERM.

mod common;

use common::{Launcher, tempdir};
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
