//! One `kubevirt-launcher` process per VMI: started with the VMI on its stdin, asked for its
//! status and to shut down over its control socket (`kubevirt-launcher-protocol`), and reaped.
//!
//! Every request runs on the blocking pool with the protocol's timeout, and only the caller's own
//! launcher is borrowed meanwhile: a launcher that does not answer delays no other.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_launcher_protocol::{Client, ClientError, ExitStatus, FinalStatus, Status};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::report::Report;
use super::{NodeConfig, NodeError};

/// The file the launcher's stdout and stderr go to, in its run directory.
pub const LAUNCHER_LOG: &str = "launcher.log";

/// A launcher the agent started.
#[derive(Debug)]
pub struct Launcher {
    child: Child,
    run_dir: PathBuf,
    shutdown_requested: bool,
    /// Its last status answer: what stands while it is too busy to answer.
    last: Option<Status>,
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
        let log_path = run_dir.join(LAUNCHER_LOG);
        let log =
            std::fs::File::create(&log_path).map_err(io("creating the launcher log", &log_path))?;
        let log_err = log
            .try_clone()
            .map_err(io("opening the launcher log", &log_path))?;
        let document = serde_json::to_vec(vmi).map_err(NodeError::Encode)?;
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
            last: None,
        })
    }

    /// Its run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// What the agent knows now: its exit (with the final status it left), else its control
    /// socket's status, else its last status, else that it is still starting.
    pub async fn report(&mut self) -> Report {
        if let Ok(Some(status)) = self.child.try_wait() {
            let code = status.code();
            // What the VMI shows comes from the final status; one that cannot be read is said so.
            let last = FinalStatus::read(&self.run_dir).unwrap_or_else(|e| {
                let exit = code.and_then(ExitStatus::from_code);
                Some(FinalStatus::new(
                    exit.unwrap_or(ExitStatus::Failed),
                    Some(format!("its final status is unreadable: {e}")),
                ))
            });
            return Report::Exited { code, last };
        }
        let client = Client::for_run_dir(&self.run_dir);
        match blocking(client, |c| c.status()).await {
            Ok(s) => {
                self.last = Some(s.clone());
                Report::Status(s)
            }
            Err(e) if e.is_unreachable() => match &self.last {
                Some(s) => Report::Status(s.clone()),
                None => Report::Launching,
            },
            // The launcher answered what this agent cannot use: another version, or nonsense.
            Err(e) => Report::Incompatible(format!("{e}")),
        }
    }

    /// Asks the guest to shut down (ACPI power button; forced stop after `grace`), once. A
    /// launcher whose socket does not answer gets SIGTERM, which means the same to it.
    pub async fn shutdown(&mut self, grace: Duration) {
        if self.shutdown_requested {
            return;
        }
        self.shutdown_requested = true;
        let client = Client::for_run_dir(&self.run_dir);
        if blocking(client, move |c| c.shutdown(Some(grace)))
            .await
            .is_err()
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
}

/// Runs a blocking protocol request off the async workers.
async fn blocking<T: Send + 'static>(
    client: Client,
    request: impl FnOnce(&Client) -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    let socket = client.socket().to_path_buf();
    match tokio::task::spawn_blocking(move || request(&client)).await {
        Ok(r) => r,
        // The request panicked or the runtime is shutting down: no answer.
        Err(join) => Err(ClientError::Io {
            socket,
            source: std::io::Error::other(join),
        }),
    }
}
