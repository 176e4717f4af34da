//! The run state machine shared by the VM handle, its vCPU threads and devices.
//!
//! ```text
//! Created --start--> Running <--pause/resume--> Paused
//!                       \                         /
//!                        +--> Exiting (reason recorded) --> Exited (threads joined)
//! ```
//! One mutex guards the state, one condvar announces every change. vCPU threads check the state
//! before each `KVM_RUN` (`Lifecycle::gate`); whoever changes it kicks them out of `KVM_RUN`.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::snapshot::{SnapshotError, VcpuState, VcpuStateError};
use crate::vcpu::VcpuSnapshot;
use crate::vcpu::kick;
use crate::vm::exit::{ExitReason, ExitRequester};

/// Where a VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Built, vCPUs not started.
    Created,
    /// vCPUs running.
    Running,
    /// Every vCPU parked outside `KVM_RUN`.
    Paused,
    /// An exit reason is recorded; vCPU threads are stopping or stopped.
    Exited,
}

/// Errors of lifecycle transitions.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LifecycleError {
    /// The VM has not been started.
    #[error("the VM has not been started")]
    NotStarted,
    /// The VM was already started.
    #[error("the VM was already started")]
    AlreadyStarted,
    /// The VM ended.
    #[error("the VM already exited: {0}")]
    Exited(ExitReason),
    /// A live migration holds the VM paused: it resumes it itself if the migration fails.
    #[error("a live migration holds the VM paused; cancel the migration to resume it here")]
    Migrating,
    /// Not every vCPU parked in time (one is stuck in a device access).
    #[error("pause timed out after {0:?}: {1} of {2} vCPUs parked")]
    PauseTimeout(Duration, usize, usize),
}

#[derive(Debug)]
struct Inner {
    started: bool,
    pause_requested: bool,
    exit: Option<ExitReason>,
    /// vCPU threads that have not finished.
    live: usize,
    /// vCPU threads parked by a pause.
    parked: usize,
    /// A live migration is under way: [`Lifecycle::resume`] is refused.
    migrating: bool,
    snapshots: Vec<Option<VcpuSnapshot>>,
    /// Parked vCPUs asked to save their full state ([`Lifecycle::save_vcpu_states`]).
    save_requested: Vec<bool>,
    /// What they saved.
    saved: Vec<Option<Result<VcpuState, VcpuStateError>>>,
}

/// What a vCPU thread does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Enter the guest.
    Run,
    /// Leave the run loop: the VM is exiting.
    Exit,
}

/// The shared state machine.
#[derive(Debug)]
pub struct Lifecycle {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Kick targets: `pthread_t` of each running vCPU thread, `None` before and after.
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    /// Disks holding a failed request while the VM is paused for it ([`super::io_stop`]).
    pub(crate) io_stops: Mutex<super::io_stop::IoStops>,
    /// kvmclock held still while paused ([`super::paused_clock`]).
    pub(crate) clock: super::paused_clock::PausedClock,
}

impl Lifecycle {
    /// The state machine for `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> Self {
        Lifecycle {
            inner: Mutex::new(Inner {
                started: false,
                pause_requested: false,
                exit: None,
                live: 0,
                parked: 0,
                migrating: false,
                snapshots: vec![None; vcpus],
                save_requested: vec![false; vcpus],
                saved: (0..vcpus).map(|_| None).collect(),
            }),
            changed: Condvar::new(),
            threads: Mutex::new(vec![None; vcpus]),
            io_stops: Mutex::default(),
            clock: super::paused_clock::PausedClock::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn kick_all(&self) {
        let threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        for thread in threads.iter().flatten() {
            kick::kick(*thread);
        }
    }

    /// Marks the VM started with `vcpus` threads about to run.
    pub fn start(&self, vcpus: usize) -> Result<(), LifecycleError> {
        let mut inner = self.lock();
        if inner.started {
            return Err(LifecycleError::AlreadyStarted);
        }
        inner.started = true;
        inner.live = vcpus;
        Ok(())
    }

    /// How many vCPUs the VM has.
    pub fn vcpu_count(&self) -> usize {
        self.lock().snapshots.len()
    }

    /// The current state.
    pub fn state(&self) -> VmState {
        let inner = self.lock();
        match (inner.started, &inner.exit, inner.pause_requested) {
            (_, Some(_), _) => VmState::Exited,
            (false, None, _) => VmState::Created,
            (true, None, true) if inner.parked == inner.live => VmState::Paused,
            (true, None, _) => VmState::Running,
        }
    }

    /// The exit reason, once there is one.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.lock().exit.clone()
    }

    /// Called by a vCPU thread once its kick handler is armed.
    pub(crate) fn register_thread(&self, index: usize) {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)[index] = Some(me);
    }

    /// Called by a vCPU thread as it leaves its loop; it receives no kicks afterwards.
    pub(crate) fn unregister_thread(&self, index: usize) {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)[index] = None;
        let mut inner = self.lock();
        inner.live -= 1;
        drop(inner);
        self.changed.notify_all();
    }

    /// The vCPU side: blocks while a pause is requested (capturing `snapshot` once when it
    /// parks, and calling `save` whenever [`Lifecycle::save_vcpu_states`] asks) and says
    /// whether to enter the guest.
    pub(crate) fn gate(
        &self,
        index: usize,
        snapshot: impl FnOnce() -> Option<VcpuSnapshot>,
        mut save: impl FnMut() -> Result<VcpuState, VcpuStateError>,
    ) -> Gate {
        let mut inner = self.lock();
        if inner.exit.is_some() {
            return Gate::Exit;
        }
        if !inner.pause_requested {
            return Gate::Run;
        }
        inner.snapshots[index] = snapshot();
        inner.parked += 1;
        self.changed.notify_all();
        while inner.pause_requested && inner.exit.is_none() {
            if inner.save_requested[index] {
                inner.save_requested[index] = false;
                inner.saved[index] = Some(save());
                self.changed.notify_all();
                continue;
            }
            inner = self.wait(inner);
        }
        inner.parked -= 1;
        inner.snapshots[index] = None;
        self.changed.notify_all();
        if inner.exit.is_some() {
            Gate::Exit
        } else {
            Gate::Run
        }
    }

    /// Parks every vCPU outside `KVM_RUN` and waits until they all are, up to `timeout`.
    pub fn pause(&self, timeout: Duration) -> Result<(), LifecycleError> {
        let mut inner = self.lock();
        if !inner.started {
            return Err(LifecycleError::NotStarted);
        }
        if let Some(reason) = &inner.exit {
            return Err(LifecycleError::Exited(reason.clone()));
        }
        inner.pause_requested = true;
        drop(inner);
        self.kick_all();
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        while inner.parked < inner.live && inner.exit.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LifecycleError::PauseTimeout(
                    timeout,
                    inner.parked,
                    inner.live,
                ));
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        match &inner.exit {
            Some(reason) => Err(LifecycleError::Exited(reason.clone())),
            None => {
                // Every vCPU is parked and none leaves while this lock is held.
                self.clock.paused();
                Ok(())
            }
        }
    }

    /// Marks a live migration under way (or over): while it is, [`Lifecycle::resume`] is
    /// refused, so nothing but the migration itself resumes a VM it paused.
    pub(crate) fn set_migrating(&self, migrating: bool) {
        self.lock().migrating = migrating;
    }

    /// Ends the VM as migrated ([`ExitReason::Migrated`]) unless it already has an exit
    /// reason (a stop that came while the migration held it paused), which is returned: then
    /// the target must not run the guest.
    pub(crate) fn commit_migration(&self) -> Result<(), ExitReason> {
        let mut inner = self.lock();
        if let Some(reason) = &inner.exit {
            return Err(reason.clone());
        }
        inner.exit = Some(ExitReason::Migrated);
        drop(inner);
        self.changed.notify_all();
        self.kick_all();
        Ok(())
    }

    /// Lets parked vCPUs run again and waits until they have all left the pause.
    pub fn resume(&self) -> Result<(), LifecycleError> {
        let mut inner = self.lock();
        if !inner.started {
            return Err(LifecycleError::NotStarted);
        }
        if let Some(reason) = &inner.exit {
            return Err(LifecycleError::Exited(reason.clone()));
        }
        if inner.migrating {
            return Err(LifecycleError::Migrating);
        }
        // Still parked (this lock keeps them so): the clock goes on where it stopped.
        self.clock.resuming();
        inner.pause_requested = false;
        self.changed.notify_all();
        while inner.parked > 0 && inner.exit.is_none() {
            inner = self.wait(inner);
        }
        drop(inner);
        self.release_held_queues();
        Ok(())
    }

    /// Asks every parked vCPU for its full state (see [`VcpuState::save`]) and waits up to
    /// `timeout` for them all. The VM must be paused.
    pub(crate) fn save_vcpu_states(
        &self,
        timeout: Duration,
    ) -> Result<Vec<VcpuState>, SnapshotError> {
        let mut inner = self.lock();
        let state = match (inner.started, &inner.exit, inner.pause_requested) {
            (_, Some(reason), _) => return Err(SnapshotError::Exited(reason.clone())),
            (true, None, true) if inner.parked == inner.live => VmState::Paused,
            (false, ..) => VmState::Created,
            _ => VmState::Running,
        };
        if state != VmState::Paused {
            return Err(SnapshotError::NotPaused(state));
        }
        inner.save_requested.iter_mut().for_each(|r| *r = true);
        inner.saved.iter_mut().for_each(|s| *s = None);
        self.changed.notify_all();
        let deadline = Instant::now() + timeout;
        while let Some(index) = inner.saved.iter().position(Option::is_none) {
            if let Some(reason) = &inner.exit {
                return Err(SnapshotError::Exited(reason.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                inner.save_requested.iter_mut().for_each(|r| *r = false);
                return Err(SnapshotError::CaptureTimeout { index, timeout });
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let saved: Vec<_> = inner.saved.iter_mut().filter_map(Option::take).collect();
        drop(inner);
        saved
            .into_iter()
            .map(|s| s.map_err(SnapshotError::from))
            .collect()
    }

    /// The registers vCPU `index` had when it parked; only while the VM is paused.
    pub fn snapshot(&self, index: usize) -> Option<VcpuSnapshot> {
        self.lock().snapshots.get(index).copied().flatten()
    }

    /// Waits for an exit reason and for every vCPU thread to leave its loop, up to `timeout`
    /// (`None`: forever).
    pub fn wait_exit(&self, timeout: Option<Duration>) -> Option<ExitReason> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut inner = self.lock();
        while inner.exit.is_none() || inner.live > 0 {
            inner = match deadline {
                None => self.wait(inner),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.changed
                        .wait_timeout(inner, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        inner.exit.clone()
    }
}

impl ExitRequester for Lifecycle {
    fn request_exit(&self, reason: ExitReason) {
        let mut inner = self.lock();
        if inner.exit.is_some() {
            return;
        }
        inner.exit = Some(reason);
        drop(inner);
        self.changed.notify_all();
        self.kick_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_exit_reason_wins() {
        let l = Lifecycle::new(1);
        l.start(0).unwrap();
        l.request_exit(ExitReason::Reset);
        l.request_exit(ExitReason::Stopped);
        assert_eq!(l.exit_reason(), Some(ExitReason::Reset));
        assert_eq!(l.state(), VmState::Exited);
        assert_eq!(l.wait_exit(Some(Duration::ZERO)), Some(ExitReason::Reset));
    }

    #[test]
    fn a_migration_commits_only_if_nothing_ended_the_vm_and_holds_it_paused_until_then() {
        let l = Lifecycle::new(1);
        l.start(0).unwrap();
        l.set_migrating(true);
        assert_eq!(l.resume(), Err(LifecycleError::Migrating));
        l.commit_migration().unwrap();
        assert_eq!(l.exit_reason(), Some(ExitReason::Migrated));
        let stopped = Lifecycle::new(1);
        stopped.start(0).unwrap();
        stopped.request_exit(ExitReason::Stopped);
        assert_eq!(stopped.commit_migration(), Err(ExitReason::Stopped));
        assert_eq!(stopped.exit_reason(), Some(ExitReason::Stopped));
    }

    #[test]
    fn transitions_before_start_are_refused() {
        let l = Lifecycle::new(1);
        assert_eq!(l.state(), VmState::Created);
        assert_eq!(
            l.pause(Duration::from_secs(1)),
            Err(LifecycleError::NotStarted)
        );
        assert_eq!(l.resume(), Err(LifecycleError::NotStarted));
        l.start(1).unwrap();
        assert_eq!(l.start(1), Err(LifecycleError::AlreadyStarted));
    }

    /// A fake vCPU thread that loops through the gate (no KVM: the gate is the whole protocol).
    fn spawn_gate_loop(l: Arc<Lifecycle>, index: usize) -> std::thread::JoinHandle<u64> {
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            let no_state = || Err(VcpuStateError::Array { index, what: "test", count: 0 });
            while l.gate(index, || Some(VcpuSnapshot::default()), no_state) == Gate::Run {
                rounds += 1;
                std::thread::yield_now();
            }
            l.unregister_thread(index);
            rounds
        })
    }

    #[test]
    fn pause_parks_every_vcpu_and_resume_releases_them() {
        let l = Arc::new(Lifecycle::new(2));
        l.start(2).unwrap();
        let threads: Vec<_> = (0..2).map(|i| spawn_gate_loop(l.clone(), i)).collect();
        l.pause(Duration::from_secs(10)).unwrap();
        assert_eq!(l.state(), VmState::Paused);
        assert!(l.snapshot(0).is_some() && l.snapshot(1).is_some());
        l.resume().unwrap();
        assert_eq!(l.state(), VmState::Running);
        assert!(l.snapshot(0).is_none());
        l.request_exit(ExitReason::Stopped);
        assert_eq!(
            l.wait_exit(Some(Duration::from_secs(10))),
            Some(ExitReason::Stopped)
        );
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            l.pause(Duration::from_secs(1)),
            Err(LifecycleError::Exited(ExitReason::Stopped))
        );
    }

    #[test]
    fn exit_releases_paused_vcpus() {
        let l = Arc::new(Lifecycle::new(1));
        l.start(1).unwrap();
        let t = spawn_gate_loop(l.clone(), 0);
        l.pause(Duration::from_secs(10)).unwrap();
        l.request_exit(ExitReason::PowerOff);
        t.join().unwrap();
        assert_eq!(l.wait_exit(None), Some(ExitReason::PowerOff));
    }

    #[test]
    fn wait_times_out_while_running() {
        let l = Lifecycle::new(1);
        l.start(1).unwrap();
        assert_eq!(l.wait_exit(Some(Duration::from_millis(10))), None);
    }
}
