//! The launcher's control API for the node agent and virtctl: newline-delimited JSON over a unix
//! socket. Requests are `{"op": "status" | "pause" | "unpause" | "shutdown" | "softReboot" |
//! "reset" | "stop"}`; every answer is one line, `{"ok": true, ...}` or
//! `{"ok": false, "error": "..."}`.
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

mod shutdown;

pub use self::shutdown::{Shutdown, Shutdowns};

use crate::run::machine::Machine;
use kubevirt_vmm::{ExitReason, Vm, VmState};
use serde_json::{Value, json};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The upstream phase and reason for a machine: `Running` across guest reboots.
pub fn machine_phase(machine: &Machine) -> (&'static str, Option<String>) {
    let vm = machine.vm();
    if machine.restarts() > 0 && vm.state() == VmState::Created {
        return ("Running", None);
    }
    phase(&vm)
}

/// The upstream phase and reason for a VM's state.
pub fn phase(vm: &Vm) -> (&'static str, Option<String>) {
    match vm.state() {
        VmState::Created => ("Scheduled", None),
        VmState::Running | VmState::Paused => ("Running", None),
        VmState::Exited => match vm.exit_reason() {
            Some(
                ExitReason::PowerOff | ExitReason::DebugExit { code: 0 } | ExitReason::Stopped,
            ) => ("Succeeded", None),
            Some(other) => ("Failed", Some(other.to_string())),
            None => ("Failed", Some("the VMM stopped without a reason".into())),
        },
    }
}

/// A running control socket.
#[derive(Debug)]
pub struct ControlServer {
    socket: PathBuf,
}

impl ControlServer {
    /// Serve the control API of `target` at `socket`.
    pub fn start(socket: &Path, target: Target) -> io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let target = target.clone();
                    let _ = thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || serve(conn, &target));
                }
            })?;
        Ok(Self {
            socket: socket.to_path_buf(),
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
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
    pub info: Value,
}

fn serve(conn: UnixStream, target: &Target) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let answer = handle(target, &line);
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// Answer one request line.
pub fn handle(target: &Target, line: &str) -> Value {
    let vm = target.machine.vm();
    let fail = |e: String| json!({"ok": false, "error": e});
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return fail(format!("a request is one JSON object per line: {e}")),
    };
    match req.get("op").and_then(Value::as_str) {
        Some("status") => {
            let (phase, reason) = machine_phase(&target.machine);
            json!({"ok": true, "phase": phase, "reason": reason, "paused": vm.state() == VmState::Paused,
                   "restarts": target.machine.restarts(), "guest": target.info})
        }
        Some("pause") => match vm.pause() {
            Ok(()) => json!({"ok": true}),
            Err(e) => fail(e.to_string()),
        },
        Some("unpause") => match vm.resume() {
            Ok(()) => json!({"ok": true}),
            Err(e) => fail(e.to_string()),
        },
        Some("shutdown") => {
            let grace = match req.get("gracePeriodSeconds") {
                None => target.grace,
                Some(v) => match v.as_u64() {
                    Some(s) => Duration::from_secs(s),
                    None => {
                        return fail(
                            "gracePeriodSeconds must be a whole number of seconds ≥ 0".into(),
                        );
                    }
                },
            };
            match target.shutdowns.request(grace) {
                Shutdown::Requested => json!({"ok": true, "gracePeriodSeconds": grace.as_secs()}),
                Shutdown::AlreadyRequested => json!({"ok": true, "already": true}),
                Shutdown::Stopped(r) => {
                    json!({"ok": true, "exit": r.to_string(), "reason": "no ACPI power button: stopped"})
                }
            }
        }
        Some("softReboot") => match target.machine.soft_reboot() {
            Ok(()) => json!({"ok": true}),
            Err(e) => fail(e.to_string()),
        },
        Some("reset") => {
            target.machine.reset();
            json!({"ok": true})
        }
        Some("stop") => {
            target.machine.begin_shutdown();
            json!({"ok": true, "exit": vm.stop().to_string()})
        }
        Some(other) => fail(format!(
            "unknown op {other:?}: use status, pause, unpause, shutdown, softReboot, reset or stop"
        )),
        None => fail("the request has no \"op\"".into()),
    }
}
