//! One `kubevirt-launcher` process per VMI: started with the VMI on its stdin, asked for its
//! status and to shut down over its control socket, and reaped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kubevirt_api::core::v1::VirtualMachineInstance;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::report::{LauncherStatus, Report};
use super::{NodeConfig, NodeError};

/// How long a control request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);

/// A launcher the agent started.
#[derive(Debug)]
pub struct Launcher {
    child: Child,
    run_dir: PathBuf,
    shutdown_requested: bool,
}

impl Launcher {
    /// Starts a launcher for `vmi` in `run_dir` (sockets, ephemeral disks, `launcher.log`), with
    /// the VMI as JSON on its stdin.
    pub async fn spawn(
        config: &NodeConfig,
        vmi: &VirtualMachineInstance,
        run_dir: PathBuf,
    ) -> Result<Self, NodeError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| NodeError::Io { what, path, source }
        };
        std::fs::create_dir_all(&run_dir).map_err(io("creating the run directory", &run_dir))?;
        let log_path = run_dir.join("launcher.log");
        let log =
            std::fs::File::create(&log_path).map_err(io("creating the launcher log", &log_path))?;
        let log_err = log
            .try_clone()
            .map_err(io("opening the launcher log", &log_path))?;
        let mut child = Command::new(&config.launcher)
            .arg("run")
            .args(["--vmi", "-", "--quiet"])
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--cache-dir")
            .arg(&config.cache_dir)
            .arg("--volumes-dir")
            .arg(&config.volumes_dir)
            .args(&config.launcher_args)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io("starting the launcher", &config.launcher))?;
        let document = serde_json::to_vec(vmi).map_err(|e| NodeError::Encode(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&document)
                .await
                .map_err(io("writing the VMI to the launcher", &config.launcher))?;
        }
        Ok(Launcher {
            child,
            run_dir,
            shutdown_requested: false,
        })
    }

    /// Its run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// What the agent knows now: its exit, else its control socket's status, else that it is
    /// still starting.
    pub async fn report(&mut self) -> Report {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Report::Exited {
                code: status.code(),
                message: self.last_words(),
            };
        }
        match self.request(r#"{"op":"status"}"#).await {
            Some(answer) => match serde_json::from_str::<LauncherStatus>(&answer) {
                Ok(s) => Report::Status(s),
                Err(_) => Report::Launching,
            },
            None => Report::Launching,
        }
    }

    /// Asks the guest to shut down (ACPI power button; forced stop after `grace`), once. A
    /// launcher whose socket does not answer gets SIGTERM, which means the same to it.
    pub async fn shutdown(&mut self, grace: Duration) {
        if self.shutdown_requested {
            return;
        }
        self.shutdown_requested = true;
        let request = format!(
            r#"{{"op":"shutdown","gracePeriodSeconds":{}}}"#,
            grace.as_secs()
        );
        if self.request(&request).await.is_none()
            && let Some(pid) = self.child.id()
        {
            // SAFETY: kill(2) on our own child, which has not been reaped (`id` is Some).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills it at once.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    async fn request(&self, line: &str) -> Option<String> {
        let socket = self.run_dir.join("control.sock");
        let exchange = async {
            let stream = UnixStream::connect(&socket).await.ok()?;
            let (read, mut write) = stream.into_split();
            write.write_all(line.as_bytes()).await.ok()?;
            write.write_all(b"\n").await.ok()?;
            let mut answer = String::new();
            BufReader::new(read).read_line(&mut answer).await.ok()?;
            (!answer.is_empty()).then_some(answer)
        };
        tokio::time::timeout(CONTROL_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }

    /// The launcher's last non-empty line on stderr (its verdict, or its error).
    fn last_words(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.run_dir.join("launcher.log")).ok()?;
        log.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim_start_matches("error: ").to_string())
    }
}
