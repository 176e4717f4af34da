//! Live migration on request (`{"op": "migrate", "target": ...}`): the VM streamed by
//! kubevirt-vmm's pre-copy migration to a launcher started with `--incoming` (see
//! `kubevirt_vmm::migration`).
//!
//! The migration runs on a thread of its own ([`crate::confine::ThreadKind::Migration`], the
//! only kind that may open a socket: a stream to the target), started with the control socket
//! before the main thread confines itself. The request is answered as soon as the migration
//! starts; `status` reports its progress ([`MigrationStatus`]) while it runs and after. On
//! success the VM ends with `ExitReason::Migrated` and the launcher exits with
//! `ExitStatus::Migrated`; on failure, a timeout or `cancelMigration` ([`Migrator::cancel`])
//! the guest runs on here.

use super::Target;
use kubevirt_launcher_protocol::{
    DEFAULT_COMPLETION_TIMEOUT_PER_GIB, Done, MigrateRequest, MigrationStatus, encode_error,
    encode_ok,
};
use kubevirt_vmm::migration::MigrationPhase;
use kubevirt_vmm::{MigrationControl, MigrationOptions, VmState};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long the source waits for the target to answer (the target builds the VM between the
/// last page and its ack).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The migration in progress or last done.
#[derive(Debug)]
struct Current {
    target: String,
    control: Arc<MigrationControl>,
    error: Option<String>,
}

type Job = (Target, MigrateRequest, Arc<MigrationControl>);

/// The handle control threads use to start migrations and read their progress.
#[derive(Clone)]
pub struct Migrator {
    jobs: Arc<Mutex<Sender<Job>>>,
    current: Arc<Mutex<Option<Current>>>,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator").finish_non_exhaustive()
    }
}

/// A connected stream to the target, Unix or TCP.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects to `unix:PATH` or `tcp:IP:PORT`, with read and write timeouts.
fn connect(target: &str) -> io::Result<Stream> {
    let stream = if let Some(path) = target.strip_prefix("unix:") {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        Stream::Unix(s)
    } else if let Some(addr) = target.strip_prefix("tcp:") {
        let addr: SocketAddr = addr.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr:?} is not IP:PORT (names are not resolved)"),
            )
        })?;
        let s = TcpStream::connect_timeout(&addr, ANSWER_TIMEOUT)?;
        s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        s.set_nodelay(true)?;
        Stream::Tcp(s)
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the target must be unix:PATH or tcp:IP:PORT",
        ));
    };
    Ok(stream)
}

/// `completionTimeoutPerGiB` times the data to move in GiB (guest RAM plus the copied disks'
/// contents; rounded up, at least one), as upstream scales it.
fn completion_timeout(per_gib: u64, memory: u64) -> Duration {
    let gib = memory.div_ceil(1 << 30).max(1);
    Duration::from_secs(per_gib.saturating_mul(gib))
}

impl Migrator {
    /// Starts the migration thread.
    pub fn start() -> io::Result<Migrator> {
        let (tx, rx) = mpsc::channel::<Job>();
        let current: Arc<Mutex<Option<Current>>> = Arc::default();
        let shared = current.clone();
        std::thread::Builder::new()
            .name("migration".into())
            .spawn(move || {
                crate::confine::enter(crate::confine::ThreadKind::Migration);
                for (target, request, control) in rx {
                    let error = migrate(&target, &request, &control).err();
                    if let Some(e) = &error {
                        tracing::error!(
                            target_address = %request.target,
                            error = %e,
                            "the migration failed"
                        );
                    }
                    if let Some(c) = shared
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_mut()
                    {
                        c.error = error;
                    }
                }
            })?;
        Ok(Migrator {
            jobs: Arc::new(Mutex::new(tx)),
            current,
        })
    }

    /// Starts migrating `target`'s VM as `request` says; returns the reply line.
    pub fn request(&self, target: &Target, request: MigrateRequest) -> String {
        let vm = target.machine.vm();
        if !matches!(vm.state(), VmState::Running | VmState::Paused) {
            return encode_error(&format!(
                "the VM is {:?}: only a running or paused VM migrates",
                vm.state()
            ));
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = current.as_ref()
            && !matches!(
                c.control.progress().phase,
                MigrationPhase::Completed | MigrationPhase::Failed
            )
            && c.error.is_none()
        {
            return encode_error(&format!("a migration to {} is under way", c.target));
        }
        let control = Arc::new(MigrationControl::new());
        let job = (target.clone(), request.clone(), control.clone());
        if self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .is_err()
        {
            return encode_error(&"the migration thread has ended");
        }
        *current = Some(Current {
            target: request.target,
            control,
            error: None,
        });
        encode_ok(&Done {})
    }

    /// Cancels the migration under way; returns the reply line. Asking again while it winds
    /// down, or after it ended because of the cancel, is answered the same; a launcher with no
    /// migration to cancel (none asked for, or the last one ended by itself) says so.
    pub fn cancel(&self) -> String {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(c) = current.as_ref() else {
            return encode_error(&"no migration is under way: there is nothing to cancel");
        };
        let phase = c.control.progress().phase;
        let ended = c.error.is_some()
            || matches!(phase, MigrationPhase::Completed | MigrationPhase::Failed);
        if !ended || (c.control.cancelled() && phase != MigrationPhase::Completed) {
            c.control.cancel();
            tracing::info!(target_address = %c.target, "the migration is cancelled");
            return encode_ok(&Done {});
        }
        let how = if phase == MigrationPhase::Completed {
            "completed: the guest runs there now, too late to cancel"
        } else {
            "already failed: there is nothing to cancel"
        };
        encode_error(&format!("the migration to {} {how}", c.target))
    }

    /// Waits up to `timeout` until the migration under way has ended (the source's VM ends
    /// as migrated a moment before the handover message is written: the process must not
    /// exit in between).
    pub fn wait_done(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let done = self.status().is_none_or(|s| s.is_done());
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The progress of the migration under way or last done (`None`: none was asked for).
    pub fn status(&self) -> Option<MigrationStatus> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let c = current.as_ref()?;
        let p = c.control.progress();
        let phase = if c.error.is_some() {
            MigrationPhase::Failed
        } else {
            p.phase
        };
        Some(MigrationStatus {
            phase: format!("{phase:?}"),
            target: c.target.clone(),
            rounds: p.rounds,
            bytes_sent: p.bytes_sent,
            memory_total: p.memory_total,
            disk_bytes: p.disk_bytes,
            dirty_rate_pages_per_sec: p.dirty_rate_pages_per_sec,
            bandwidth_bytes_per_sec: p.bandwidth_bytes_per_sec,
            downtime_ms: p.downtime.map(|d| d.as_millis() as u64),
            elapsed_ms: p.elapsed.as_millis() as u64,
            error: c.error.clone(),
        })
    }
}

fn migrate(
    target: &Target,
    request: &MigrateRequest,
    control: &MigrationControl,
) -> Result<(), String> {
    let vm = target.machine.vm();
    // The data a migration moves: RAM, and what the guest wrote to the disks that are copied
    // (upstream adds the ephemeral disks' sizes for a block migration).
    let memory: u64 = target.info.memory_bytes + vm.migration_disk_bytes();
    let options = MigrationOptions {
        bandwidth_limit: request
            .bandwidth_mib_per_sec
            .filter(|b| *b > 0)
            .map(|b| b << 20),
        completion_timeout: Some(completion_timeout(
            request
                .completion_timeout_per_gib
                .unwrap_or(DEFAULT_COMPLETION_TIMEOUT_PER_GIB),
            memory,
        )),
        ..MigrationOptions::default()
    };
    if control.cancelled() {
        return Err("the migration was cancelled before it started".into());
    }
    let mut stream =
        connect(&request.target).map_err(|e| format!("connecting to {}: {e}", request.target))?;
    let stats = vm
        .migrate_to(&mut stream, &options, control)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        target_address = %request.target,
        rounds = stats.rounds,
        bytes = stats.bytes_sent,
        disk_bytes = stats.disk_bytes,
        elapsed_ms = u64::try_from(stats.elapsed.as_millis()).unwrap_or(u64::MAX),
        downtime_ms = u64::try_from(stats.downtime.unwrap_or_default().as_millis()).unwrap_or(u64::MAX),
        "migrated"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_scales_with_ram_as_upstream() {
        assert_eq!(completion_timeout(150, 16 << 20), Duration::from_secs(150));
        assert_eq!(completion_timeout(150, 3 << 30), Duration::from_secs(450));
        assert!(connect("ftp:x").is_err());
        let err = connect("tcp:example.com:80").err().unwrap().to_string();
        assert!(err.contains("names are not resolved"), "{err}");
    }
}
