//! Keeps a private containerd running: starts it when its socket does not answer, restarts it
//! when it dies, and leaves it running when the kubelet stops (so pods keep running) unless told
//! to stop it. A containerd left running by an earlier `up` is adopted, not replaced.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::Layout;

/// How often the supervisor checks that containerd still answers.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long containerd may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors starting containerd.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The binary could not be started.
    #[error("starting {binary} (is the containerd package installed?): {source}")]
    Spawn {
        /// The containerd binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its log file could not be opened.
    #[error("opening {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It did not open its socket in time.
    #[error("containerd did not open {socket} within {timeout:?}; see {log}")]
    NotReady {
        /// The socket waited for.
        socket: PathBuf,
        /// How long we waited.
        timeout: Duration,
        /// Its log.
        log: PathBuf,
    },
}

/// A supervised private containerd.
#[derive(Debug)]
pub struct Supervisor {
    layout: Layout,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Whether something answers on the unix socket `path`.
pub async fn answers(path: &Path) -> bool {
    tokio::net::UnixStream::connect(path).await.is_ok()
}

fn spawn(binary: &Path, layout: &Layout) -> Result<tokio::process::Child, SuperviseError> {
    let log_path = layout.log_file();
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| SuperviseError::Log {
                path: log_path.clone(),
                source,
            })
    };
    let (out, err) = (open()?, open()?);
    let child = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(layout.config_file())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C meant for `up` must not stop the pods' runtime.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| SuperviseError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(layout.dir.join("containerd.pid"), pid.to_string());
    }
    tracing::info!(pid = child.id(), config = %layout.config_file().display(), "started containerd");
    Ok(child)
}

async fn wait_ready(layout: &Layout) -> Result<(), SuperviseError> {
    let socket = layout.socket();
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while !answers(&socket).await {
        if tokio::time::Instant::now() > deadline {
            return Err(SuperviseError::NotReady {
                socket,
                timeout: START_TIMEOUT,
                log: layout.log_file(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

impl Supervisor {
    /// Starts containerd from `binary` with the configuration already written under `layout`
    /// (or adopts the one answering on its socket), waits until it answers, and keeps it running.
    pub async fn start(layout: Layout, binary: PathBuf) -> Result<Self, SuperviseError> {
        let mut child = if answers(&layout.socket()).await {
            tracing::info!(socket = %layout.socket().display(), "adopting the running containerd");
            None
        } else {
            Some(spawn(&binary, &layout)?)
        };
        wait_ready(&layout).await?;
        let (stop, mut stopped) = watch::channel(false);
        let l = layout.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = async { let _ = stopped.wait_for(|s| *s).await; } => return,
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                }
                if let Some(c) = child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    tracing::warn!(%status, log = %l.log_file().display(), "containerd exited; restarting it");
                    child = None;
                }
                if child.is_none() && !answers(&l.socket()).await {
                    match spawn(&binary, &l) {
                        Ok(c) => child = Some(c),
                        Err(e) => tracing::error!(error = %e, "restarting containerd"),
                    }
                }
            }
        });
        Ok(Self { layout, stop, task })
    }

    /// The socket containerd answers on.
    pub fn socket(&self) -> PathBuf {
        self.layout.socket()
    }

    /// Stops supervising. With `stop_containerd`, also stops containerd (SIGTERM, then SIGKILL
    /// after 10 s); the caller stops the pods first.
    pub async fn stop(self, stop_containerd: bool) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if !stop_containerd {
            return;
        }
        let pid_file = self.layout.dir.join("containerd.pid");
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            remove_stale_sockets(&self.layout).await;
            return;
        };
        // SAFETY: kill(2) with a pid read from our own pid file and a valid signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if !answers(&self.layout.socket()).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // SAFETY: as above; signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(pid_file);
        end_orphaned_shims(&self.layout.socket());
        remove_stale_sockets(&self.layout).await;
    }
}

/// Removes the socket files a stopped containerd leaves: it removes its gRPC socket as it stops
/// but not its ttrpc one, and neither when it is killed (the chaos suite's leak check found
/// `containerd.sock.ttrpc` left after every stop). A socket something still listens on is
/// kept.
async fn remove_stale_sockets(layout: &Layout) {
    for path in [layout.socket(), layout.ttrpc_socket()] {
        let is_socket = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
        if is_socket && !answers(&path).await {
            tracing::info!(socket = %path.display(), "removing the stopped containerd's socket");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The pids of `containerd-shim*` processes started for the containerd at `socket` (their
/// `-address` argument), read from `/proc`.
pub fn shims_of(socket: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = socket.as_os_str().as_encoded_bytes();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first()
                .is_some_and(|a| a.windows(15).any(|w| w == b"containerd-shim"))
                && args.windows(2).any(|w| w[0] == b"-address" && w[1] == want)
        })
        .collect()
}

/// Ends the shims of the stopped containerd at `socket`. The pods were stopped first, so a shim
/// left is one containerd never learnt of (started while containerd was being killed, say):
/// nothing else would ever end it.
fn end_orphaned_shims(socket: &Path) {
    for pid in shims_of(socket) {
        tracing::warn!(
            pid,
            "ending a containerd shim left behind by the stopped containerd"
        );
        // SAFETY: kill(2) with a pid just read from /proc and a valid signal number; at worst
        // the process is gone already (ESRCH).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sockets of a stopped containerd go; a socket something listens on stays, and so does
    /// a file that is no socket.
    #[tokio::test]
    async fn a_stopped_containerds_sockets_are_removed_and_a_live_one_kept() {
        let dir = std::env::temp_dir().join(format!("kv-sockets-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layout = Layout::new(&dir);
        drop(std::os::unix::net::UnixListener::bind(layout.ttrpc_socket()).unwrap());
        drop(std::os::unix::net::UnixListener::bind(layout.socket()).unwrap());
        remove_stale_sockets(&layout).await;
        assert!(!layout.ttrpc_socket().exists() && !layout.socket().exists());

        let live = std::os::unix::net::UnixListener::bind(layout.socket()).unwrap();
        std::fs::write(layout.ttrpc_socket(), "not a socket").unwrap();
        remove_stale_sockets(&layout).await;
        assert!(layout.socket().exists(), "a live socket is kept");
        assert!(
            layout.ttrpc_socket().exists(),
            "a file that is no socket is kept"
        );
        drop(live);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stand-in shim (argv as containerd starts one) is found for its socket, not for
    /// another, and ending the shims of its socket ends it.
    #[test]
    fn a_shim_of_a_stopped_containerd_is_found_by_its_address_and_ended() {
        let socket = std::env::temp_dir().join(format!("kv-shim-test-{}.sock", std::process::id()));
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(
                "import os, sys; os.execv('/bin/sh', ['containerd-shim-runc-v2', '-c', \
                 'sleep 30', '-address', sys.argv[1]])",
            )
            .arg(&socket)
            .spawn()
            .expect("python3");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !shims_of(&socket).contains(&pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the stand-in shim was not found"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!shims_of(Path::new("/run/other/containerd.sock")).contains(&pid));
        end_orphaned_shims(&socket);
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the shim was not ended: {status}");
        assert!(!shims_of(&socket).contains(&pid));
    }
}
