//! The launcher's control API for the node agent and virtctl: newline-delimited JSON over a unix
//! socket, in the types of `kubevirt-launcher-protocol` (requests `{"op": "status" | "start" |
//! "pause" | "unpause" | "shutdown" | "softReboot" | "reset" | "stop"}`, replies `{"version":
//! 2, "ok": true, ...}` or `{"version": 2, "ok": false, "error": "..."}`), and `snapshot` (a
//! memory-state snapshot by name, see [`Snapshotter`]), `migrate` (a live migration to
//! another launcher, see [`Migrator`]) and `cancelMigration` (that migration given up, the guest
//! running on here).
//!
//! `softReboot` presses the power button and starts the guest again when it powers off (what
//! libvirt does for upstream without a guest agent); `reset` restarts it at once, like a reset
//! button. Both keep the disks, overlays, network and console.
//!
//! `shutdown` presses the ACPI power button and stops the VM if the guest has not powered off
//! after the grace period (`{"op": "shutdown", "gracePeriodSeconds": N}`, default the VMI's
//! `terminationGracePeriodSeconds`); `stop` ends the VM at once.
//!
//! `status` reports the VMI phase as upstream names them: `Scheduled` before the guest runs,
//! `Running` (with `paused`), then `Succeeded` when the guest powered off or `Failed` with a reason.
//!
//! A launcher started with `serve` (in its virt-launcher pod) opens the same socket before it
//! has a VMI ([`ControlServer::waiting`]): it answers `Waiting` and takes `start`
//! ([`waiting`]); once the VM is built the same socket switches to it
//! ([`ControlServer::serve_target`]), so there is never a moment without a listener.

mod migrate;
mod shutdown;
mod snapshot;
mod stats;
pub mod waiting;

pub use self::migrate::Migrator;
pub use self::shutdown::{Shutdown, Shutdowns};
pub use self::snapshot::Snapshotter;
pub use self::waiting::{Identity, ServeEvent};

use crate::run::machine::Machine;
use kubevirt_launcher_protocol::{
    Done, GuestInfo, LauncherIdentity, Phase, Request, ShutdownReply, Status, StopReply,
    encode_error, encode_ok,
};
use kubevirt_vmm::{ExitReason, Vm, VmState};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The upstream phase and reason for a machine: `Running` across guest reboots.
pub fn machine_phase(machine: &Machine) -> (Phase, Option<String>) {
    let vm = machine.vm();
    if machine.restarts() > 0 && vm.state() == VmState::Created {
        return (Phase::Running, None);
    }
    phase(&vm)
}

/// The upstream phase and reason for a VM's state.
pub fn phase(vm: &Vm) -> (Phase, Option<String>) {
    match vm.state() {
        VmState::Created => (Phase::Scheduled, None),
        VmState::Running | VmState::Paused => (Phase::Running, None),
        VmState::Exited => match vm.exit_reason() {
            Some(
                ExitReason::PowerOff | ExitReason::DebugExit { code: 0 } | ExitReason::Stopped,
            ) => (Phase::Succeeded, None),
            // This launcher's run is over; the guest runs on in the target launcher.
            Some(r @ ExitReason::Migrated) => (Phase::Succeeded, Some(r.to_string())),
            Some(other) => (Phase::Failed, Some(other.to_string())),
            None => (
                Phase::Failed,
                Some("the VMM stopped without a reason".into()),
            ),
        },
    }
}

/// What the control socket answers for.
#[derive(Debug)]
enum Serving {
    /// `serve` before (and while) its VMI is set up.
    Waiting(waiting::Waiting),
    /// A VM.
    Running(Target),
}

/// A running control socket (cheap to clone: the clones share it).
#[derive(Debug, Clone)]
pub struct ControlServer {
    socket: PathBuf,
    serving: Arc<Mutex<Serving>>,
}

impl ControlServer {
    /// Serve the control API of `target` at `socket`.
    pub fn start(socket: &Path, target: Target) -> io::Result<Self> {
        Self::listen(socket, Serving::Running(target))
    }

    /// Serve a launcher waiting for its VMI at `socket` (`serve`): `status` answers
    /// [`Phase::Waiting`] with `identity`; what the node agent asks for (start, stop) arrives
    /// on the receiver.
    pub fn waiting(socket: &Path, identity: Identity) -> io::Result<(Self, Receiver<ServeEvent>)> {
        let (waiting, events) = waiting::Waiting::new(identity);
        Ok((Self::listen(socket, Serving::Waiting(waiting))?, events))
    }

    fn listen(socket: &Path, serving: Serving) -> io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let serving = Arc::new(Mutex::new(serving));
        let shared = serving.clone();
        thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || {
                crate::confine::enter(crate::confine::ThreadKind::Control);
                for conn in listener.incoming().flatten() {
                    let serving = shared.clone();
                    let _ = thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || serve(conn, &serving));
                }
            })?;
        Ok(Self {
            socket: socket.to_path_buf(),
            serving,
        })
    }

    /// From now on the socket answers for `target` (a waiting launcher's VM is built); a `stop`
    /// or `shutdown` that came while it was being set up is applied to it now.
    pub fn serve_target(&self, target: Target) {
        let pending = {
            let mut serving = lock(&self.serving);
            let pending = match &mut *serving {
                Serving::Waiting(w) => w.take_pending(),
                Serving::Running(_) => None,
            };
            *serving = Serving::Running(target.clone());
            pending
        };
        if let Some(line) = pending {
            let answer = handle(&target, &line);
            tracing::info!(
                request = %line.trim(),
                reply = %answer.trim(),
                "applied what was asked while the VM was being set up"
            );
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

fn lock(serving: &Mutex<Serving>) -> std::sync::MutexGuard<'_, Serving> {
    serving.lock().unwrap_or_else(|p| p.into_inner())
}

/// What requests act on.
#[derive(Debug, Clone)]
pub struct Target {
    /// The machine.
    pub machine: Arc<Machine>,
    /// Its shutdowns.
    pub shutdowns: Shutdowns,
    /// The default grace period.
    pub grace: Duration,
    /// What `status` reports about the guest besides its phase (devices, interfaces).
    pub info: GuestInfo,
    /// Which VMI this is (namespace, name, uid), reported with this process's id.
    pub vmi: (String, String, String),
    /// Takes memory-state snapshots (`None`: the `snapshot` op is refused).
    pub snapshots: Option<Snapshotter>,
    /// Live-migrates the VM (`None`: the `migrate` op is refused).
    pub migrations: Option<Migrator>,
}

/// Requests read and not yet answered, in this process.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Waits (up to `timeout`) until every request read has its reply written: a `stop` ends the
/// process, which must not take the reply with it.
pub fn wait_for_replies(timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
}

fn serve(conn: UnixStream, serving: &Mutex<Serving>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        // The lock only picks what answers: a request on a running VM (which may take a
        // while, a pause waits for the vCPUs) holds no lock.
        let running = match &mut *lock(serving) {
            Serving::Waiting(w) => Err(w.handle(&line)),
            Serving::Running(t) => Ok(t.clone()),
        };
        let answer = match running {
            Ok(t) => handle(&t, &line),
            Err(answer) => answer,
        };
        let written = writeln!(out, "{answer}");
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        if written.is_err() {
            return;
        }
    }
}

/// The current status of `target`.
pub fn status(target: &Target) -> Status {
    let (phase, reason) = machine_phase(&target.machine);
    Status {
        phase,
        reason,
        paused: target.machine.vm().state() == VmState::Paused,
        io_error: target.machine.vm().io_error().map(|e| e.to_string()),
        restarts: u32::try_from(target.machine.restarts()).unwrap_or(u32::MAX),
        guest: target.info.clone(),
        launcher: Some(LauncherIdentity {
            namespace: target.vmi.0.clone(),
            name: target.vmi.1.clone(),
            uid: target.vmi.2.clone(),
            pid: std::process::id(),
        }),
        migration: target.migrations.as_ref().and_then(Migrator::status),
        migrated_away: migrated_away(&target.machine.vm()),
    }
}

/// Whether `vm` ended by handing its guest to a migration's target.
pub fn migrated_away(vm: &Vm) -> bool {
    vm.state() == VmState::Exited && vm.exit_reason() == Some(ExitReason::Migrated)
}

/// Answer one request line with one reply line (no newline).
pub fn handle(target: &Target, line: &str) -> String {
    let request = match Request::decode(line) {
        Ok(r) => r,
        Err(e) => return encode_error(&e),
    };
    let vm = target.machine.vm();
    let done = |r: Result<(), kubevirt_vmm::VmError>| match r {
        Ok(()) => encode_ok(&Done {}),
        Err(e) => encode_error(&e),
    };
    match request {
        Request::Status => encode_ok(&status(target)),
        Request::Pause => done(vm.pause()),
        Request::Unpause => done(vm.resume()),
        Request::Shutdown {
            grace_period_seconds,
        } => {
            let grace = grace_period_seconds.map_or(target.grace, Duration::from_secs);
            encode_ok(&match target.shutdowns.request(grace) {
                Shutdown::Requested => ShutdownReply::Requested {
                    grace_period_seconds: grace.as_secs(),
                },
                Shutdown::AlreadyRequested => ShutdownReply::AlreadyRequested,
                Shutdown::Stopped(r) => ShutdownReply::Stopped {
                    exit: r.to_string(),
                },
            })
        }
        Request::SoftReboot => match target.machine.soft_reboot() {
            Ok(()) => encode_ok(&Done {}),
            Err(e) => encode_error(&e),
        },
        Request::Reset => {
            target.machine.reset();
            encode_ok(&Done {})
        }
        Request::Stop => {
            target.machine.begin_shutdown();
            encode_ok(&StopReply {
                exit: vm.stop().to_string(),
            })
        }
        Request::Snapshot { name } => match &target.snapshots {
            Some(s) => s.request(target, &name),
            None => encode_error(&"this launcher takes no memory snapshots"),
        },
        Request::Migrate(request) => match &target.migrations {
            Some(m) => m.request(target, *request),
            None => encode_error(&"this launcher does not migrate"),
        },
        Request::CancelMigration => match &target.migrations {
            Some(m) => m.cancel(),
            None => {
                encode_error(&"this launcher does not migrate: there is no migration to cancel")
            }
        },
        Request::Stats => encode_ok(&stats::collect(target)),
        Request::Start(_) => encode_error(
            &"this launcher already runs its VMI: start is only taken by a launcher waiting in its pod (`kubevirt-launcher serve`)",
        ),
    }
}
