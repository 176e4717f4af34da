//! Running a built [`Vm`]: starting its vCPU threads, pausing and resuming them, ending it
//! and waiting for it to end.

use std::sync::PoisonError;
use std::time::Duration;

use super::{ExitReason, ExitRequester, PAUSE_TIMEOUT, Vm, VmError, VmState};

impl Vm {
    /// Starts every vCPU on its own thread (named `vcpu<N>`).
    ///
    /// # Errors
    /// [`VmError::Lifecycle`] when the VM was started before or has ended;
    /// [`VmError::SpawnThread`] when a vCPU thread cannot be created (the VM then ends with
    /// [`ExitReason::VcpuError`]).
    pub fn start(&self) -> Result<(), VmError> {
        let vcpus = std::mem::take(&mut *self.vcpus.lock().unwrap_or_else(PoisonError::into_inner));
        self.lifecycle.start(vcpus.len())?;
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || vcpu.run());
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(source) => {
                    // vCPUs not spawned never run: count them out so waiting ends.
                    self.lifecycle.request_exit(ExitReason::VcpuError {
                        vcpu: index,
                        error: format!("spawning its thread failed: {source}"),
                    });
                    return Err(VmError::SpawnThread { index, source });
                }
            }
        }
        Ok(())
    }

    /// Parks every vCPU outside the guest. Guest state stays as it was.
    ///
    /// # Errors
    /// [`VmError::Lifecycle`] when the VM is not running, or its vCPUs did not park within
    /// 5 seconds.
    pub fn pause(&self) -> Result<(), VmError> {
        Ok(self.lifecycle.pause(PAUSE_TIMEOUT)?)
    }

    /// The disk error that paused the VM (a disk whose error policy stops), until it is
    /// resumed; the failed request runs again on [`Vm::resume`].
    pub fn io_error(&self) -> Option<super::DiskIoError> {
        self.lifecycle.io_error()
    }

    /// Lets a paused VM run again.
    ///
    /// # Errors
    /// [`VmError::Lifecycle`] when the VM is not paused.
    pub fn resume(&self) -> Result<(), VmError> {
        Ok(self.lifecycle.resume()?)
    }

    /// Stops the VM (if it is not already ending) and waits for its vCPU threads.
    pub fn stop(&self) -> ExitReason {
        self.lifecycle.request_exit(ExitReason::Stopped);
        self.wait()
    }

    /// Waits until the VM has ended and its vCPU threads are gone.
    pub fn wait(&self) -> ExitReason {
        let reason = self
            .lifecycle
            .wait_exit(None)
            .unwrap_or(ExitReason::Stopped);
        self.join_threads();
        reason
    }

    /// Like [`Vm::wait`], giving up after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitReason> {
        let reason = self.lifecycle.wait_exit(Some(timeout))?;
        self.join_threads();
        Some(reason)
    }

    /// Waits for the vCPU threads to end. The VM must be ending. The lock is held while they
    /// are joined, so that every caller (a migration's handover, [`Vm::wait`]) returns only once
    /// they are all gone.
    pub(crate) fn join_threads(&self) {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        for t in threads.drain(..) {
            // A vCPU thread only panics on a bug; its exit reason is recorded already.
            let _ = t.join();
        }
    }

    /// Where the VM is in its life.
    pub fn state(&self) -> VmState {
        self.lifecycle.state()
    }

    /// Why the VM ended, once it has.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.lifecycle.exit_reason()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.lifecycle.state() != VmState::Created {
            self.stop();
        }
    }
}
