//! The console log rotates on a console thread under its seccomp filter (the rename and the
//! new file's append-only open are allowed): a forbidden call would end this test process with
//! exit code 159 instead of passing.

use kubevirt_launcher::confine::{self, ThreadKind};
use kubevirt_launcher::console::log::{RotatingLog, rotated};

#[test]
fn a_confined_console_thread_rotates_its_log() {
    let dir = kubevirt_testsupport::tempdir("rotate-confined");
    let path = dir.join("console.log");
    let mut log = RotatingLog::open(&path, 4).expect("open the log");
    confine::enable().expect("confinement");
    std::thread::spawn(move || {
        confine::enter(ThreadKind::Console);
        log.write(b"1234").unwrap();
        log.write(b"5678").unwrap();
        log.write(b"9").unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"5678");
    assert_eq!(std::fs::read(&path).unwrap(), b"9");
    let _ = std::fs::remove_dir_all(&dir);
}
