//! One `kubevirt-launcher` process per VMI: started with the VMI on its stdin, asked for its
//! status and to shut down over its control socket (`kubevirt-launcher-protocol`), and reaped.
//!
//! A launcher outlives its agent: it runs in its own process group, its stdin is closed once the
//! VMI is written, its stdout and stderr go to `launcher.log`, and the agent never kills it on
//! drop. While it runs it holds `launcher.log` locked (the lock is on the open file it inherited
//! as stdout), so an agent that restarted tells a live launcher from a dead run directory even
//! before its control socket answers, and never starts a second one ([`Launcher::find`]).
//! A launcher found that way is adopted: not this agent's child, it is watched through a pidfd.
//!
//! Every request runs on the blocking pool with the protocol's timeout, and only the caller's own
//! launcher is borrowed meanwhile: a launcher that does not answer delays no other.

use std::fs::{File, TryLockError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_launcher_protocol::{
    Client, ClientError, ExitStatus, FinalStatus, LauncherIdentity, Request, StartRequest, Status,
};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::report::Report;
use super::{NodeConfig, NodeError};

/// The file the launcher's stdout and stderr go to, in its run directory.
pub const LAUNCHER_LOG: &str = "launcher.log";
/// The file the agent writes the launcher's process id to, in its run directory.
pub const LAUNCHER_PID: &str = "launcher.pid";

/// Run in the launcher's new network namespace before it: the pod interface it masquerades
/// behind, then the launcher itself (same pid, so [`LAUNCHER_PID`] names its namespace too).
const POD_NETNS_SCRIPT: &str = "ip link set lo up && ip link add eth0 type veth peer name eth0-peer && ip link set eth0-peer up && ip link set eth0 up && exec \"$0\" \"$@\"";

/// Whether the launcher will attach the VMI to the pod network: an interface on a `pod` network
/// (the defaulted spec has one unless `autoattachPodInterface: false`).
pub fn wants_pod_network(vmi: &VirtualMachineInstance) -> bool {
    let ifaces = vmi
        .spec
        .domain
        .devices
        .interfaces
        .as_deref()
        .unwrap_or_default();
    let networks = vmi.spec.networks.as_deref().unwrap_or_default();
    ifaces
        .iter()
        .any(|i| networks.iter().any(|n| n.name == i.name && n.pod.is_some()))
}

/// How the agent watches a launcher's process.
#[derive(Debug)]
enum Process {
    /// Started by this agent: its child, reaped here.
    Child(Child),
    /// Found running when the agent started (another agent's child): watched through a pidfd.
    Adopted { pid: u32, pidfd: OwnedFd },
}

/// A launcher the agent started or adopted.
#[derive(Debug)]
pub struct Launcher {
    process: Process,
    run_dir: PathBuf,
    shutdown_requested: bool,
    /// Its last status answer: what stands while it is too busy to answer.
    last: Option<Status>,
    /// The VMI's `startStrategy: Paused` has been carried out (its vCPUs paused once, at start).
    start_paused: bool,
    /// It runs its VMI: spawned with it, or (in its pod) sent `start` or found past `Waiting`.
    /// A launcher is started once, never again.
    started: bool,
}

impl Launcher {
    /// Starts a launcher for `vmi` in `run_dir` (sockets, ephemeral disks, `launcher.log`), with
    /// the VMI as JSON on its stdin.
    pub async fn spawn(
        config: &NodeConfig,
        vmi: &VirtualMachineInstance,
        run_dir: PathBuf,
        restore_from: Option<&Path>,
    ) -> Result<Self, NodeError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| NodeError::Io { what, path, source }
        };
        // Once more if the namespace's directory went between the two steps of the first (the
        // clean-up of the namespace's last VMI removes it: `adopt::remove_empty_namespace_dir`).
        std::fs::create_dir_all(&run_dir)
            .or_else(|_| std::fs::create_dir_all(&run_dir))
            .map_err(io("creating the run directory", &run_dir))?;
        let log_path = run_dir.join(LAUNCHER_LOG);
        let log = open_log(&log_path)?;
        match log.try_lock() {
            Ok(()) => {}
            // Never two guests for one VMI: a launcher runs in this directory already.
            Err(TryLockError::WouldBlock) => {
                return Err(NodeError::LauncherBusy {
                    run_dir,
                    why: "it holds the launcher log".into(),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(io("locking the launcher log", &log_path)(e));
            }
        }
        log.set_len(0)
            .map_err(io("truncating the launcher log", &log_path))?;
        // A final status an earlier launcher left here must not speak for this one.
        let last = run_dir.join(kubevirt_launcher_protocol::FINAL_STATUS);
        match std::fs::remove_file(&last) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing the earlier final status", &last)(e)),
        }
        let log_err = log
            .try_clone()
            .map_err(io("opening the launcher log", &log_path))?;
        let document = serde_json::to_vec(vmi).map_err(NodeError::Encode)?;
        // A VMI on the pod network gets a network namespace of its own (the pod's role here:
        // the agent runs no CNI), with an `eth0` (one end of a veth pair whose other end stays there: no dummy driver on every kernel), and the launcher builds its masquerade
        // binding inside it; the namespace ends with the launcher. The node agent's endpoint
        // reaches the guest from inside it (port-forward).
        let mut command = if wants_pod_network(vmi) {
            let mut c = Command::new("unshare");
            c.args(["--net", "--", "sh", "-c", POD_NETNS_SCRIPT])
                .arg(&config.launcher)
                .args(["run", "--pod-network"]);
            c
        } else {
            let mut c = Command::new(&config.launcher);
            c.arg("run");
            c
        };
        let mut child = command
            .args(["--vmi", "-", "--quiet"])
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--cache-dir")
            .arg(&config.cache_dir)
            .arg("--volumes-dir")
            .arg(&config.volumes_dir)
            .args(&config.launcher_args)
            .args(
                restore_from
                    .iter()
                    .flat_map(|d| [std::ffi::OsStr::new("--restore-from"), d.as_os_str()]),
            )
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a signal to the agent's group (a terminal's ^C or hangup,
            // a kill of the group) does not reach the guest.
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(io("starting the launcher", &config.launcher))?;
        if let Some(pid) = child.id() {
            let pid_path = run_dir.join(LAUNCHER_PID);
            std::fs::write(&pid_path, pid.to_string())
                .map_err(io("writing the launcher's pid to", &pid_path))?;
        }
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&document)
                .await
                .map_err(io("writing the VMI to the launcher", &config.launcher))?;
        }
        Ok(Launcher {
            process: Process::Child(child),
            run_dir,
            shutdown_requested: false,
            last: None,
            start_paused: false,
            started: true,
        })
    }

    /// Its run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// What the agent knows now: its exit (with the final status it left), else its control
    /// socket's status, else its last status, else that it is still starting.
    pub async fn report(&mut self) -> Report {
        if let Some(code) = self.exit() {
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
                Report::Status(Box::new(s))
            }
            Err(e) if e.is_unreachable() => match &self.last {
                Some(s) => Report::Status(Box::new(s.clone())),
                None => Report::Launching,
            },
            // The launcher answered what this agent cannot use: another version, or nonsense.
            Err(e) => Report::Incompatible(format!("{e}")),
        }
    }

    /// Asks the guest to shut down (ACPI power button; forced stop after `grace`, `None`: the
    /// VMI's own grace period), once. A launcher whose socket does not answer gets SIGTERM,
    /// which means the same to it.
    pub async fn shutdown(&mut self, grace: Option<Duration>) {
        if self.shutdown_requested {
            return;
        }
        self.shutdown_requested = true;
        let client = Client::for_run_dir(&self.run_dir);
        if blocking(client, move |c| c.shutdown(grace)).await.is_err() {
            self.signal(libc::SIGTERM);
        }
    }

    /// Carries out `startStrategy: Paused` once the guest runs: pauses its vCPUs, once.
    /// Returns whether it paused them now.
    pub async fn pause_at_start(&mut self, status: &Status) -> bool {
        if self.start_paused || status.phase != kubevirt_launcher_protocol::Phase::Running {
            return false;
        }
        self.start_paused = true;
        if status.paused {
            return false;
        }
        let client = Client::for_run_dir(&self.run_dir);
        blocking(client, |c| {
            c.act(&kubevirt_launcher_protocol::Request::Pause)
        })
        .await
        .is_ok()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        self.exit().is_some()
    }

    /// `Some(exit code)` once it has exited (`Some(None)`: killed by a signal, or adopted, whose
    /// code only its parent sees).
    fn exit(&mut self) -> Option<Option<i32>> {
        match &mut self.process {
            Process::Child(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.code()),
                _ => None,
            },
            Process::Adopted { pidfd, .. } => pidfd_exited(pidfd).then_some(None),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        match &self.process {
            Process::Child(child) => child.id(),
            Process::Adopted { pid, .. } => Some(*pid),
        }
    }

    /// Sends `signal` to it, if it still runs.
    fn signal(&mut self, signal: libc::c_int) {
        match &self.process {
            Process::Child(child) => {
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) on our own child, which has not been reaped (`id` is
                    // Some), so the pid is still its.
                    unsafe {
                        libc::kill(pid as libc::pid_t, signal);
                    }
                }
            }
            Process::Adopted { pidfd, .. } => {
                // SAFETY: pidfd_send_signal(2) on a pidfd we own; it signals that process or
                // fails, never a process that reused the pid. No pointers are passed.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        signal,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    );
                }
            }
        }
    }

    /// Kills it at once.
    pub async fn kill(&mut self) {
        match &mut self.process {
            Process::Child(child) => {
                let _ = child.kill().await;
            }
            Process::Adopted { .. } => self.signal(libc::SIGKILL),
        }
    }

    /// The launcher running in `run_dir`, adopted, if one runs there (`Ok(None)`: the directory
    /// is dead or absent). `uid` is the VMI it must run (`None`: any, e.g. to stop a launcher
    /// whose VMI is gone).
    ///
    /// # Errors
    /// A launcher runs there but cannot be adopted yet (it names no pid, or runs another VMI):
    /// the caller must not start another one.
    pub async fn find(run_dir: &Path, uid: Option<&str>) -> Result<Option<Self>, NodeError> {
        if !holds_lock(run_dir)? {
            return Ok(None);
        }
        let busy = |why: String| NodeError::LauncherBusy {
            run_dir: run_dir.to_path_buf(),
            why,
        };
        let client = Client::for_run_dir(run_dir);
        let status = blocking(client, |c| c.status()).await.ok();
        let identity: Option<LauncherIdentity> = status.as_ref().and_then(|s| s.launcher.clone());
        if let (Some(me), Some(uid)) = (&identity, uid)
            && me.uid != uid
        {
            return Err(busy(format!(
                "it runs {}/{} with uid {}, not uid {uid}",
                me.namespace, me.name, me.uid
            )));
        }
        let pid = match &identity {
            Some(me) => me.pid,
            None => std::fs::read_to_string(run_dir.join(LAUNCHER_PID))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| busy("it runs but names no pid yet".into()))?,
        };
        let pidfd = pidfd_open(pid).map_err(|e| busy(format!("pidfd_open({pid}): {e}")))?;
        // Still the locking launcher now that it is pinned by the pidfd (not a reused pid).
        if !holds_lock(run_dir)? {
            return Ok(None);
        }
        Ok(Some(Launcher {
            process: Process::Adopted { pid, pidfd },
            run_dir: run_dir.to_path_buf(),
            shutdown_requested: false,
            last: status,
            // Adopted: whatever pause state it has is the user's now.
            start_paused: true,
            started: true,
        }))
    }

    /// The launcher a virt-launcher pod runs in `run_dir` (`kubevirt-launcher serve`), attached
    /// through its control socket, if it listens there (`Ok(None)`: no socket yet, or nobody
    /// listens on it any more). Its process id is the socket peer's (`SO_PEERCRED`, in this
    /// agent's pid namespace: the host's with `hostPID`), written to [`LAUNCHER_PID`] for the
    /// endpoint; its process is watched through a pidfd. A launcher found past `Waiting` counts
    /// as started and is never sent `start`.
    ///
    /// # Errors
    /// It answers but runs another VMI than `uid`, or its process cannot be pinned: the caller
    /// must not start it.
    pub async fn attach(run_dir: &Path, uid: &str) -> Result<Option<Self>, NodeError> {
        let busy = |why: String| NodeError::LauncherBusy {
            run_dir: run_dir.to_path_buf(),
            why,
        };
        let Some((pid, status)) = peer_status(run_dir).await? else {
            return Ok(None);
        };
        if let Some(me) = &status.launcher
            && me.uid != uid
        {
            return Err(busy(format!(
                "it serves {}/{} with uid {}, not uid {uid}",
                me.namespace, me.name, me.uid
            )));
        }
        let pidfd = pidfd_open(pid).map_err(|e| busy(format!("pidfd_open({pid}): {e}")))?;
        // Pinned now: the socket still answering from that pid says the pidfd is the
        // launcher's, not a process that reused the pid of one that died meanwhile.
        let status = match peer_status(run_dir).await? {
            Some((again, status)) if again == pid && !pidfd_exited(&pidfd) => status,
            _ => return Ok(None),
        };
        let pid_path = run_dir.join(LAUNCHER_PID);
        std::fs::write(&pid_path, pid.to_string()).map_err(|source| NodeError::Io {
            what: "writing the launcher's pid to",
            path: pid_path,
            source,
        })?;
        let started = status.phase != kubevirt_launcher_protocol::Phase::Waiting;
        Ok(Some(Launcher {
            process: Process::Adopted { pid, pidfd },
            run_dir: run_dir.to_path_buf(),
            shutdown_requested: false,
            last: Some(status),
            // Found running: whatever pause state it has is the user's now.
            start_paused: started,
            started,
        }))
    }

    /// Whether it runs its VMI (see [`Launcher::attach`]).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Sends a launcher waiting in its pod the VMI to run (`start`), once: a launcher that took
    /// it is never sent it again.
    ///
    /// # Errors
    /// The launcher refused (another uid, an invalid VMI, past `Waiting`) or did not answer.
    pub async fn start(
        &mut self,
        vmi: serde_json::Value,
        network_prepared: bool,
        restore_from: Option<String>,
    ) -> Result<(), ClientError> {
        if self.started {
            return Ok(());
        }
        let client = Client::for_run_dir(&self.run_dir).with_timeout(START_TIMEOUT);
        let start = Request::Start(Box::new(StartRequest {
            vmi,
            network_prepared,
            restore_from,
        }));
        blocking(client, move |c| c.act(&start)).await?;
        self.started = true;
        Ok(())
    }
}

impl Launcher {
    /// Asks the launcher to migrate its guest as `request` says; the answer comes once the
    /// migration started (its progress is in the status).
    ///
    /// # Errors
    /// The launcher refused (not running, a migration already runs) or did not answer.
    pub async fn migrate(
        &mut self,
        request: kubevirt_launcher_protocol::MigrateRequest,
    ) -> Result<(), ClientError> {
        let client = Client::for_run_dir(&self.run_dir);
        let migrate = Request::Migrate(Box::new(request));
        blocking(client, move |c| c.act(&migrate)).await
    }
}

/// How long a launcher may take to take `start`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the control socket in `run_dir` for its status on one connection and learns the
/// listener's pid from it (`SO_PEERCRED`). `Ok(None)`: no socket, or nobody listens on it.
async fn peer_status(run_dir: &Path) -> Result<Option<(u32, Status)>, NodeError> {
    use tokio::io::AsyncBufReadExt;
    let socket = run_dir.join(kubevirt_launcher_protocol::CONTROL_SOCKET);
    let io = |what: &'static str| {
        let path = socket.clone();
        move |source| NodeError::Io { what, path, source }
    };
    let mut stream = match tokio::net::UnixStream::connect(&socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io("connecting to")(e)),
    };
    let pid = stream
        .peer_cred()
        .map_err(io("reading the peer credentials of"))?
        .pid()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            io("reading the peer credentials of")(std::io::Error::other(
                "the listener is in no pid namespace this agent sees (the agent needs hostPID)",
            ))
        })?;
    let exchange = async {
        let mut line = Request::Status.to_line();
        line.push('\n');
        stream.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        tokio::io::BufReader::new(stream)
            .read_line(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(kubevirt_launcher_protocol::DEFAULT_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))
        .and_then(|r| r)
        .map_err(io("asking the status of"))?;
    let status: Status =
        kubevirt_launcher_protocol::decode_reply(&answer).map_err(|e| NodeError::LauncherBusy {
            run_dir: run_dir.to_path_buf(),
            why: format!("its status answer is unusable: {e}"),
        })?;
    Ok(Some((pid, status)))
}

/// Opens (creates) a launcher log without truncating it.
fn open_log(path: &Path) -> Result<File, NodeError> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| NodeError::Io {
            what: "opening the launcher log",
            path: path.to_path_buf(),
            source,
        })
}

/// Whether a live launcher holds `run_dir`'s log locked.
pub fn holds_lock(run_dir: &Path) -> Result<bool, NodeError> {
    let path = run_dir.join(LAUNCHER_LOG);
    if !path.exists() {
        return Ok(false);
    }
    let log = open_log(&path)?;
    match log.try_lock() {
        // Ours now; released when `log` closes below.
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(source)) => Err(NodeError::Io {
            what: "probing the lock of",
            path,
            source,
        }),
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: pidfd_open(2) takes a pid and flags, no pointers; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind `pidfd` has exited (the pidfd polls readable then).
fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0
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

#[cfg(test)]
mod tests;
