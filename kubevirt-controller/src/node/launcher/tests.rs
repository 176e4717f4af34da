use super::*;
use std::os::unix::process::CommandExt;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kv-adopt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A stand-in launcher: `sleep` holding the run directory's log locked as its stdout, as the
/// agent starts a real one, with its pid written beside it.
fn stand_in(dir: &Path) -> std::process::Child {
    let log = open_log(&dir.join(LAUNCHER_LOG)).unwrap();
    log.try_lock().unwrap();
    let child = std::process::Command::new("sleep")
        .arg("60")
        .stdout(log)
        .process_group(0)
        .spawn()
        .unwrap();
    std::fs::write(dir.join(LAUNCHER_PID), child.id().to_string()).unwrap();
    child
}

#[tokio::test]
async fn a_dead_or_empty_run_directory_has_no_launcher() {
    let dir = scratch("dead");
    assert!(!holds_lock(&dir).unwrap());
    assert!(Launcher::find(&dir, None).await.unwrap().is_none());
    let mut child = stand_in(&dir);
    child.kill().unwrap();
    child.wait().unwrap();
    // Eventually: a process another test forks meanwhile holds a copy of the log until it execs.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while holds_lock(&dir).unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock goes with the process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Launcher::find(&dir, Some("u")).await.unwrap().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_live_launcher_is_adopted_watched_through_a_pidfd_and_killed() {
    let dir = scratch("live");
    let mut child = stand_in(&dir);
    assert!(holds_lock(&dir).unwrap());
    // Its log is locked: nothing may start another launcher here.
    let spawn = open_log(&dir.join(LAUNCHER_LOG)).unwrap().try_lock();
    assert!(matches!(spawn, Err(TryLockError::WouldBlock)));
    let mut adopted = Launcher::find(&dir, Some("u"))
        .await
        .unwrap()
        .expect("adopted");
    assert_eq!(adopted.pid(), Some(child.id()));
    assert!(!adopted.exited());
    // No control socket answers: it is still starting, as far as the agent can tell.
    assert_eq!(adopted.report().await, Report::Launching);
    adopted.kill().await;
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(adopted.exited());
    assert_eq!(
        adopted.report().await,
        Report::Exited {
            code: None,
            last: None
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_live_launcher_without_a_pid_is_not_adopted_and_not_replaced() {
    let dir = scratch("nopid");
    let mut child = stand_in(&dir);
    std::fs::remove_file(dir.join(LAUNCHER_PID)).unwrap();
    let e = Launcher::find(&dir, Some("u")).await.unwrap_err();
    assert!(e.to_string().contains("names no pid"), "{e}");
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
