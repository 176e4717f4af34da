//! The launcher's control API for the node agent and virtctl: newline-delimited JSON over a unix
//! socket. Requests are `{"op": "status" | "pause" | "unpause" | "stop"}`; every answer is one
//! line, `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
//!
//! `status` reports the VMI phase as upstream names them: `Scheduled` before the guest runs,
//! `Running` (with `paused`), then `Succeeded` when the guest powered off or `Failed` with a reason.

use kubevirt_vmm::{ExitReason, Vm, VmState};
use serde_json::{Value, json};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

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
    /// Serve `vm`'s control API at `socket`.
    pub fn start(socket: &Path, vm: Arc<Vm>) -> io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let vm = vm.clone();
                    let _ = thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || serve(conn, &vm));
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

fn serve(conn: UnixStream, vm: &Vm) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let answer = handle(vm, &line);
        if writeln!(out, "{answer}").is_err() {
            return;
        }
    }
}

/// Answer one request line.
pub fn handle(vm: &Vm, line: &str) -> Value {
    let fail = |e: String| json!({"ok": false, "error": e});
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return fail(format!("a request is one JSON object per line: {e}")),
    };
    match req.get("op").and_then(Value::as_str) {
        Some("status") => {
            let (phase, reason) = phase(vm);
            json!({"ok": true, "phase": phase, "reason": reason, "paused": vm.state() == VmState::Paused})
        }
        Some("pause") => match vm.pause() {
            Ok(()) => json!({"ok": true}),
            Err(e) => fail(e.to_string()),
        },
        Some("unpause") => match vm.resume() {
            Ok(()) => json!({"ok": true}),
            Err(e) => fail(e.to_string()),
        },
        Some("stop") => json!({"ok": true, "exit": vm.stop().to_string()}),
        Some(other) => fail(format!(
            "unknown op {other:?}: use status, pause, unpause or stop"
        )),
        None => fail("the request has no \"op\"".into()),
    }
}
