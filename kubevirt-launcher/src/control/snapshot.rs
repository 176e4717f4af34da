//! Memory-state snapshots on request (`{"op": "snapshot", "name": N}`): the VM's vCPUs,
//! devices and RAM written to `<snapshot dir>/<name>/` by kubevirt-vmm, which
//! `kubevirt-launcher run --restore-from` resumes in a new launcher with no second boot.
//!
//! Writing files is more than the control threads may do, so the work happens on a thread of
//! its own ([`crate::confine::ThreadKind::Snapshot`]), started with the control socket — before
//! the main thread confines itself, so it inherits no other kind's filter. A running guest is
//! paused for the cut and resumed after it; a paused one stays paused.

use super::Target;
use kubevirt_launcher_protocol::{SnapshotReply, encode_error, encode_ok};
use kubevirt_vmm::VmState;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

/// One request for the snapshot thread.
struct Job {
    target: Target,
    name: String,
    reply: Sender<String>,
}

/// The handle control threads use to ask for snapshots (cheap to clone).
#[derive(Clone)]
pub struct Snapshotter {
    dir: PathBuf,
    jobs: Arc<Mutex<Sender<Job>>>,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("dir", &self.dir)
            .finish()
    }
}

impl Snapshotter {
    /// Starts the snapshot thread, writing snapshots under `dir`.
    pub fn start(dir: &Path) -> io::Result<Snapshotter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let base = dir.to_path_buf();
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                crate::confine::enter(crate::confine::ThreadKind::Snapshot);
                for job in rx {
                    let answer = take(&job.target, &base.join(&job.name));
                    let _ = job.reply.send(answer);
                }
            })?;
        Ok(Snapshotter {
            dir: dir.to_path_buf(),
            jobs: Arc::new(Mutex::new(tx)),
        })
    }

    /// Where snapshots go.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes snapshot `name` (already checked to be one path component) of `target`'s VM and
    /// returns the reply line.
    pub fn request(&self, target: &Target, name: &str) -> String {
        let (reply, answer) = mpsc::channel();
        let job = Job {
            target: target.clone(),
            name: name.to_string(),
            reply,
        };
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job);
        if sent.is_err() {
            return encode_error(&"the snapshot thread has ended");
        }
        answer
            .recv()
            .unwrap_or_else(|_| encode_error(&"the snapshot thread has ended"))
    }
}

/// Pauses a running VM, saves it to `dir`, resumes it.
fn take(target: &Target, dir: &Path) -> String {
    let vm = target.machine.vm();
    let was_running = vm.state() == VmState::Running;
    if was_running && let Err(e) = vm.pause() {
        return encode_error(&e);
    }
    let result = vm.snapshot(dir);
    if was_running && let Err(e) = vm.resume() {
        tracing::error!(error = %e, "resuming the guest after its snapshot failed");
    }
    match result {
        Ok(info) => encode_ok(&SnapshotReply {
            directory: dir.display().to_string(),
            state_bytes: info.state_bytes,
            memory_bytes_written: info.memory_bytes_written,
            memory_size: info.memory_size,
        }),
        Err(e) => encode_error(&e),
    }
}
