//! The protocol between `kubevirt-launcher` and whoever drives it (the node agent, virtctl, a
//! user with `socat`): one set of types both sides use, so a phase or a request is never a string
//! written in two crates.
//!
//! - [`Request`]: what the control socket ([`CONTROL_SOCKET`] in the launcher's run directory)
//!   takes, one JSON object per line: `{"op": "status"}`, `{"op": "shutdown",
//!   "gracePeriodSeconds": 30}`, ... A request may carry `"version"`; one other than
//!   [`VERSION`] is refused with an error naming both versions.
//! - Replies: one line per request, `{"version": 2, "ok": true, ...}` with the body of the
//!   request's reply type ([`Status`], [`ShutdownReply`], [`StopReply`]) flattened in, or
//!   `{"version": 2, "ok": false, "error": "..."}`.
//! - [`ExitStatus`]: the launcher's exit code, and [`FinalStatus`]: what it writes to
//!   [`FINAL_STATUS`] in its run directory before it exits, so the final reason reaches the VMI
//!   without reading its log.
//! - [`LAUNCHER_LOCK`]: the lock a launcher in a pod holds in its run directory while it lives
//!   ([`hold`]); [`lifetime`] tells a live launcher from a gone one (kill -9 included).
//! - [`Client`]: the blocking client (one connection per request, with a timeout).
//!
//! ```
//! use kubevirt_launcher_protocol::{Phase, Request, Status, decode_reply, encode_ok};
//!
//! let line = Request::Shutdown { grace_period_seconds: Some(5) }.to_line();
//! assert_eq!(Request::decode(&line).unwrap(), Request::Shutdown { grace_period_seconds: Some(5) });
//!
//! let status = Status { phase: Phase::Running, ..Status::default() };
//! let reply = encode_ok(&status);
//! assert_eq!(decode_reply::<Status>(&reply).unwrap().phase, Phase::Running);
//! ```
#![deny(missing_docs)]

mod client;
mod exit;
mod lifetime;
mod migrate;
mod reply;
mod request;
mod stats;

pub use self::client::{Client, ClientError, DEFAULT_TIMEOUT};
pub use self::exit::{ExitStatus, FinalStatus, FinalStatusError};
pub use self::lifetime::{LAUNCHER_LOCK, Lifetime, hold, lifetime};
pub use self::migrate::{DEFAULT_COMPLETION_TIMEOUT_PER_GIB, MigrateRequest, MigrationStatus};
pub use self::reply::{
    Done, GuestInfo, GuestInterface, LauncherIdentity, Phase, ReplyError, ShutdownReply,
    SnapshotReply, Status, StopReply, decode_reply, encode_error, encode_ok,
};
pub use self::request::{Request, RequestError, StartRequest, is_snapshot_name};
pub use self::stats::{DiskStats, InterfaceStats, Stats, VcpuStats};

/// The protocol version this crate speaks. Bump it when a request or reply changes in a way an
/// older peer would misread.
pub const VERSION: u32 = 2;

/// The control socket's file name in the launcher's run directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The serial console socket's file name in the launcher's run directory.
pub const CONSOLE_SOCKET: &str = "console.sock";
/// The file the launcher writes its [`FinalStatus`] to in its run directory, just before it exits.
pub const FINAL_STATUS: &str = "final.json";
