//! The control socket of a launcher waiting in its virt-launcher pod (`serve`): it answers
//! `status` with [`Phase::Waiting`] and its identity, exits on `stop` or `shutdown`, and takes
//! `start` for its own VMI only (the uid it was started with). Once `start` is taken the VM is
//! being set up: `status` answers `Scheduled`; `stop` or `shutdown` is kept and applied to the
//! VM the moment it is built ([`Waiting::take_pending`]); the rest is refused until it runs.

use kubevirt_launcher_protocol::{
    Done, LauncherIdentity, Phase, Request, ShutdownReply, Status, StopReply, encode_error,
    encode_ok,
};
use std::sync::mpsc::{Receiver, Sender, channel};

/// Which VMI a launcher is for, from its command line (the pod the VMI controller rendered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The VMI's namespace.
    pub namespace: String,
    /// The VMI's name.
    pub name: String,
    /// The VMI's uid: the only one `start` is taken for.
    pub uid: String,
}

/// What the node agent asked a waiting launcher for, delivered to its main thread.
#[derive(Debug, Clone, PartialEq)]
pub enum ServeEvent {
    /// Run this VMI (its uid is the launcher's).
    Start {
        /// The VirtualMachineInstance object.
        vmi: serde_json::Value,
        /// The node agent built the pod network's binding: open `tap0`, serve DHCP, nothing
        /// more.
        network_prepared: bool,
        /// Resume from the memory-state snapshot of this name in `<run-dir>/snapshots/`.
        restore_from: Option<String>,
    },
    /// `stop` or `shutdown` before the VMI started: the launcher exits 0.
    Exit {
        /// The request (`stop`, `shutdown`).
        op: &'static str,
    },
}

/// A launcher's control state before its VM runs.
#[derive(Debug)]
pub struct Waiting {
    identity: Identity,
    events: Sender<ServeEvent>,
    started: bool,
    /// The VMI's grace period (what a pending `shutdown` without one will use).
    grace_seconds: u64,
    /// A `stop` or `shutdown` that came while the VM was being set up (its request line).
    pending: Option<String>,
}

/// Upstream's default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECONDS: u64 = 30;

/// The uid in a VMI object's metadata, if it has one.
fn uid_of(vmi: &serde_json::Value) -> Option<&str> {
    vmi.get("metadata")?.get("uid")?.as_str()
}

impl Waiting {
    /// A waiting launcher for `identity`; its events arrive on the receiver.
    pub fn new(identity: Identity) -> (Self, Receiver<ServeEvent>) {
        let (events, rx) = channel();
        (
            Waiting {
                identity,
                events,
                started: false,
                grace_seconds: DEFAULT_GRACE_SECONDS,
                pending: None,
            },
            rx,
        )
    }

    fn status(&self) -> Status {
        Status {
            phase: if self.started {
                Phase::Scheduled
            } else {
                Phase::Waiting
            },
            launcher: Some(LauncherIdentity {
                namespace: self.identity.namespace.clone(),
                name: self.identity.name.clone(),
                uid: self.identity.uid.clone(),
                pid: std::process::id(),
            }),
            ..Status::default()
        }
    }

    /// The `stop` or `shutdown` request line that came while the VM was being set up, to apply
    /// to the VM now that it is built.
    pub fn take_pending(&mut self) -> Option<String> {
        self.pending.take()
    }

    /// Answers one request line with one reply line (no newline).
    pub fn handle(&mut self, line: &str) -> String {
        let request = match Request::decode(line) {
            Ok(r) => r,
            Err(e) => return encode_error(&e),
        };
        let op = request.op();
        match request {
            Request::Status => encode_ok(&self.status()),
            Request::Start(_) if self.started => encode_error(&format!(
                "VMI {}/{} (uid {}) is already being started: start is taken once",
                self.identity.namespace, self.identity.name, self.identity.uid
            )),
            Request::Start(start) => {
                let theirs = uid_of(&start.vmi).unwrap_or("");
                if theirs != self.identity.uid {
                    return encode_error(&format!(
                        "this launcher runs the VMI with uid {:?} (its --uid); the start request's VMI has metadata.uid {theirs:?}: refused",
                        self.identity.uid
                    ));
                }
                self.grace_seconds = start.vmi["spec"]["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(DEFAULT_GRACE_SECONDS);
                let event = ServeEvent::Start {
                    vmi: start.vmi,
                    network_prepared: start.network_prepared,
                    restore_from: start.restore_from,
                };
                if self.events.send(event).is_err() {
                    return encode_error(&"the launcher is exiting");
                }
                self.started = true;
                encode_ok(&Done {})
            }
            Request::Stop | Request::Shutdown { .. } if !self.started => {
                let _ = self.events.send(ServeEvent::Exit { op });
                let exit = "stopped before the VMI was started".to_string();
                if op == "stop" {
                    encode_ok(&StopReply { exit })
                } else {
                    encode_ok(&ShutdownReply::Stopped { exit })
                }
            }
            Request::Stop | Request::Shutdown { .. } if self.pending.is_some() => {
                if op == "stop" {
                    encode_ok(&StopReply {
                        exit: "a stop or shutdown is already pending: the VM ends once it is built"
                            .into(),
                    })
                } else {
                    encode_ok(&ShutdownReply::AlreadyRequested)
                }
            }
            Request::Stop => {
                self.pending = Some(line.to_string());
                encode_ok(&StopReply {
                    exit: "the VM is being set up: it is stopped the moment it is built".into(),
                })
            }
            Request::Shutdown {
                grace_period_seconds,
            } => {
                self.pending = Some(line.to_string());
                encode_ok(&ShutdownReply::Requested {
                    grace_period_seconds: grace_period_seconds.unwrap_or(self.grace_seconds),
                })
            }
            _ if self.started => encode_error(&format!(
                "{op}: the VM is being set up (start was taken); ask again once status says Running"
            )),
            _ => encode_error(&format!(
                "{op}: the launcher is waiting for its VMI (no VM yet): send start first; only status, start, stop and shutdown are taken while waiting"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubevirt_launcher_protocol::{StartRequest, decode_reply};

    fn waiting() -> (Waiting, Receiver<ServeEvent>) {
        Waiting::new(Identity {
            namespace: "default".into(),
            name: "demo".into(),
            uid: "uid-1".into(),
        })
    }

    fn start(uid: &str) -> String {
        Request::Start(Box::new(StartRequest {
            vmi: serde_json::json!({"metadata": {"uid": uid}}),
            network_prepared: true,
            restore_from: None,
        }))
        .to_line()
    }

    #[test]
    fn status_is_waiting_with_the_identity_then_scheduled_once_started() {
        let (mut w, events) = waiting();
        let s: Status = decode_reply(&w.handle(r#"{"op":"status"}"#)).unwrap();
        assert_eq!(s.phase, Phase::Waiting);
        let id = s.launcher.unwrap();
        assert_eq!((id.name.as_str(), id.uid.as_str()), ("demo", "uid-1"));
        assert_eq!(id.pid, std::process::id());
        decode_reply::<Done>(&w.handle(&start("uid-1"))).unwrap();
        assert!(matches!(
            events.try_recv(),
            Ok(ServeEvent::Start {
                network_prepared: true,
                ..
            })
        ));
        let s: Status = decode_reply(&w.handle(r#"{"op":"status"}"#)).unwrap();
        assert_eq!(s.phase, Phase::Scheduled);
        let again = decode_reply::<Done>(&w.handle(&start("uid-1"))).unwrap_err();
        assert!(again.to_string().contains("already"), "{again}");
        let pause = decode_reply::<Done>(&w.handle(r#"{"op":"pause"}"#)).unwrap_err();
        assert!(pause.to_string().contains("being set up"), "{pause}");
    }

    #[test]
    fn a_shutdown_during_set_up_is_kept_for_the_vm_with_the_vmis_grace_period() {
        let (mut w, _events) = waiting();
        let vmi = serde_json::json!({"metadata": {"uid": "uid-1"}, "spec": {"terminationGracePeriodSeconds": 7}});
        let start = Request::Start(Box::new(StartRequest {
            vmi,
            network_prepared: false,
            restore_from: None,
        }));
        decode_reply::<Done>(&w.handle(&start.to_line())).unwrap();
        assert_eq!(w.take_pending(), None);
        let r: ShutdownReply = decode_reply(&w.handle(r#"{"op":"shutdown"}"#)).unwrap();
        assert_eq!(
            r,
            ShutdownReply::Requested {
                grace_period_seconds: 7
            }
        );
        let again: ShutdownReply = decode_reply(&w.handle(r#"{"op":"shutdown"}"#)).unwrap();
        assert_eq!(again, ShutdownReply::AlreadyRequested);
        let stop: StopReply = decode_reply(&w.handle(r#"{"op":"stop"}"#)).unwrap();
        assert!(stop.exit.contains("already pending"), "{stop:?}");
        assert_eq!(w.take_pending().as_deref(), Some(r#"{"op":"shutdown"}"#));
        assert_eq!(w.take_pending(), None);
    }

    #[test]
    fn another_vmis_start_is_refused_naming_both_uids() {
        let (mut w, events) = waiting();
        let e = decode_reply::<Done>(&w.handle(&start("uid-2"))).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("uid-1") && text.contains("uid-2"), "{text}");
        assert!(events.try_recv().is_err(), "nothing started");
        let s: Status = decode_reply(&w.handle(r#"{"op":"status"}"#)).unwrap();
        assert_eq!(s.phase, Phase::Waiting);
    }

    #[test]
    fn stop_and_shutdown_end_a_waiting_launcher_and_the_rest_is_refused() {
        let (mut w, events) = waiting();
        let e = decode_reply::<Done>(&w.handle(r#"{"op":"reset"}"#)).unwrap_err();
        assert!(e.to_string().contains("waiting"), "{e}");
        decode_reply::<StopReply>(&w.handle(r#"{"op":"stop"}"#)).unwrap();
        assert_eq!(events.try_recv(), Ok(ServeEvent::Exit { op: "stop" }));
        decode_reply::<ShutdownReply>(&w.handle(r#"{"op":"shutdown"}"#)).unwrap();
        assert_eq!(events.try_recv(), Ok(ServeEvent::Exit { op: "shutdown" }));
    }
}
