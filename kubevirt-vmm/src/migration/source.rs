//! The sending side: pre-copy rounds, then stop-and-copy, then the handover (see the module
//! documentation of `crate::migration`).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::dirty::DirtyLog;
use super::disks::{self, DiskCopy, Range};
use super::wire::{self, Hello, Message, PAGE_SIZE, PAGES_PER_FRAME, Page, WireError};
use super::{MigrationControl, MigrationError, MigrationOptions, MigrationPhase, MigrationStats};
use crate::memory::{DIRTY_PAGE_SIZE, GuestMemoryMmap};
use crate::snapshot::{
    MachineState, MemoryLayout, SnapshotState, resume_devices, save_devices, seal,
};
use crate::virtio::block::{activate_all, inactivate_all};
use crate::vm::{PAUSE_TIMEOUT, Vm, VmState};

fn vm_err(e: impl std::fmt::Display) -> MigrationError {
    MigrationError::Vm(e.to_string())
}

/// Writes frames, counts bytes and pages, keeps to the bandwidth limit and the deadline.
struct Sender<'a, S> {
    stream: &'a mut S,
    options: &'a MigrationOptions,
    control: &'a MigrationControl,
    memory: &'a GuestMemoryMmap,
    started: Instant,
    bytes: u64,
    pages_sent: u64,
    zero_pages: u64,
    disk_bytes: u64,
    round: u32,
    /// The frame being written, its allocation reused.
    buf: Vec<u8>,
}

impl<S: Read + Write> Sender<'_, S> {
    /// Fails if cancelled or past the completion deadline.
    fn check(&self) -> Result<(), MigrationError> {
        if self.control.cancelled() {
            return Err(MigrationError::Cancelled);
        }
        if let Some(limit) = self.options.completion_timeout
            && self.started.elapsed() > limit
        {
            return Err(MigrationError::Timeout(limit, self.round));
        }
        Ok(())
    }

    fn send(&mut self, msg: &Message) -> Result<(), MigrationError> {
        match wire::write_message_with(self.stream, msg, &mut self.buf) {
            Ok(n) => self.bytes += n,
            // A target that refused something sent its reason before it closed: read it.
            Err(WireError::Io { op, source })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                let e = WireError::Io { op, source };
                return Err(match wire::read_message(self.stream) {
                    Ok(Message::Error(reason)) => MigrationError::Peer {
                        side: "target",
                        reason,
                    },
                    _ => e.into(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(limit) = self.options.bandwidth_limit.filter(|l| *l > 0) {
            let due = Duration::from_secs_f64(self.bytes as f64 / limit as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        Ok(())
    }

    /// Sends the pages at `gpas`, zero pages as bare addresses; checks for cancellation and
    /// the deadline between frames if `interruptible`.
    fn send_pages(&mut self, gpas: &[u64], interruptible: bool) -> Result<(), MigrationError> {
        for chunk in gpas.chunks(PAGES_PER_FRAME) {
            if interruptible {
                self.check()?;
            }
            let mut pages = Vec::with_capacity(chunk.len());
            for &gpa in chunk {
                let mut data = Box::new([0u8; PAGE_SIZE]);
                self.memory
                    .read_slice(&mut data[..], GuestAddress(gpa))
                    .map_err(|_| MigrationError::ReadGuest(gpa))?;
                if is_zero(&data[..]) {
                    self.zero_pages += 1;
                    pages.push(Page::Zero(gpa));
                } else {
                    self.pages_sent += 1;
                    pages.push(Page::Data(gpa, data));
                }
            }
            let round = self.round;
            self.send(&Message::Pages { round, pages })?;
        }
        Ok(())
    }

    /// Sends the disk `ranges` (see `disks.rs`), checking for cancellation and the deadline
    /// between frames if `interruptible`.
    fn send_disks(
        &mut self,
        copy: &DiskCopy<'_>,
        ranges: &[Range],
        interruptible: bool,
    ) -> Result<(), MigrationError> {
        let round = self.round;
        let cell = std::cell::RefCell::new(self);
        let covered = copy.send(
            round,
            ranges,
            |m| cell.borrow_mut().send(m),
            || {
                if interruptible {
                    cell.borrow().check()
                } else {
                    Ok(())
                }
            },
        )?;
        cell.into_inner().disk_bytes += covered;
        Ok(())
    }

    fn expect(&mut self, expected: &'static str) -> Result<Message, MigrationError> {
        match wire::read_message(self.stream)? {
            Message::Error(reason) => Err(MigrationError::Peer {
                side: "target",
                reason,
            }),
            m if m.name() == expected => Ok(m),
            m => Err(WireError::Unexpected {
                expected,
                got: m.name(),
            }
            .into()),
        }
    }

    fn publish(&self, phase: MigrationPhase, update: impl FnOnce(&mut MigrationStats)) {
        self.control.update(|p| {
            p.phase = phase;
            p.rounds = self.round;
            p.bytes_sent = self.bytes;
            p.pages_sent = self.pages_sent;
            p.zero_pages = self.zero_pages;
            p.disk_bytes = self.disk_bytes;
            p.elapsed = self.started.elapsed();
            update(p);
        });
    }
}

/// Whether `bytes` (a multiple of 8 long) are all zero.
pub(super) fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(8)
        .all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
}

fn all_pages(memory: &GuestMemoryMmap) -> Vec<u64> {
    memory
        .iter()
        .flat_map(|r| {
            let start = r.start_addr().0;
            (0..r.len() / DIRTY_PAGE_SIZE).map(move |p| start + p * DIRTY_PAGE_SIZE)
        })
        .collect()
}

impl Vm {
    /// Live-migrates this VM over `stream` to a target running
    /// [`crate::VmBuilder::migrate_from`] with the same configuration. Returns once the target
    /// has taken the guest: this VM has then ended with [`ExitReason::Migrated`] and never
    /// runs again. `control` reports progress to other threads and cancels.
    ///
    /// The stream should have a read timeout (e.g. `UnixStream::set_read_timeout`), or a
    /// target that stops answering blocks this call.
    ///
    /// # Errors
    /// [`MigrationError`] naming what failed — the target refused (its reason is in
    /// [`MigrationError::Peer`]), the stream broke, the migration was cancelled or timed out.
    /// The VM then runs on here (it is resumed if it was running).
    pub fn migrate_to<S: Read + Write>(
        &self,
        stream: &mut S,
        options: &MigrationOptions,
        control: &MigrationControl,
    ) -> Result<MigrationStats, MigrationError> {
        let (lifecycle, _, _) = self.migration_parts();
        let was_running = match lifecycle.state() {
            VmState::Running => true,
            VmState::Paused => false,
            other => return Err(MigrationError::NotMigratable(other)),
        };
        let memory = self.memory();
        let memory_total: u64 = memory.iter().map(|r| r.len()).sum();
        control.update(|p| {
            *p = MigrationStats {
                memory_total,
                ..Default::default()
            }
        });
        let mut sender = Sender {
            stream,
            options,
            control,
            memory,
            started: Instant::now(),
            bytes: 0,
            pages_sent: 0,
            zero_pages: 0,
            disk_bytes: 0,
            round: 0,
            buf: Vec::new(),
        };
        let result = self.run_migration(&mut sender, was_running);
        match &result {
            Ok(_) => {}
            Err(e) => {
                // Best effort: the target learns why and discards what it has.
                let _ = wire::write_message(sender.stream, &Message::Abort(e.to_string()));
                sender.publish(MigrationPhase::Failed, |_| {});
            }
        }
        result
    }

    fn run_migration<S: Read + Write>(
        &self,
        tx: &mut Sender<'_, S>,
        was_running: bool,
    ) -> Result<MigrationStats, MigrationError> {
        let (lifecycle, buses, vm_fd) = self.migration_parts();
        let memory = self.memory();
        wire::write_preamble(tx.stream)?;
        let hello = Hello {
            vcpus: lifecycle.vcpu_count() as u32,
            memory_size: memory.iter().map(|r| r.len()).sum(),
            regions: memory.iter().map(|r| (r.start_addr().0, r.len())).collect(),
            disks: disks::describe(self.migration_disks()),
        };
        tx.send(&Message::Hello(hello))?;
        tx.expect("Ready")?;

        let log = DirtyLog::start(vm_fd, memory)?;
        let (copy, mut disk_pending) = DiskCopy::start(self.migration_disks())?;
        let mut pending = all_pages(memory);
        loop {
            tx.publish(MigrationPhase::PreCopy, |_| {});
            let (t0, b0) = (Instant::now(), tx.bytes);
            tx.send_pages(&pending, true)?;
            tx.send_disks(&copy, &disk_pending, true)?;
            let took = t0.elapsed().max(Duration::from_micros(1));
            let bandwidth = ((tx.bytes - b0) as f64 / took.as_secs_f64()).max(1.0);
            pending = log.take()?;
            disk_pending = copy.take_dirty();
            tx.round += 1;
            let dirty = pending.len() as u64;
            let disk_dirty: u64 = disk_pending.iter().map(|r| r.2).sum();
            let rate = (dirty as f64 / took.as_secs_f64()) as u64;
            tx.publish(MigrationPhase::PreCopy, |p| {
                p.dirty_pages = dirty;
                p.dirty_rate_pages_per_sec = rate;
                p.bandwidth_bytes_per_sec = bandwidth as u64;
            });
            let estimate = (dirty * (PAGE_SIZE as u64 + 8) + disk_dirty) as f64 / bandwidth;
            if estimate <= tx.options.downtime_target.as_secs_f64()
                || tx.round >= tx.options.max_rounds
            {
                break;
            }
        }
        tx.check()?;

        tx.publish(MigrationPhase::StopAndCopy, |_| {});
        // From the pause on, only this migration resumes the VM (if it fails).
        lifecycle.set_migrating(true);
        if was_running && let Err(e) = lifecycle.pause(PAUSE_TIMEOUT) {
            lifecycle.set_migrating(false);
            return Err(vm_err(e));
        }
        let paused_at = Instant::now();
        let mut inactivated = false;
        let outcome =
            self.stop_and_copy(tx, &log, pending, (&copy, disk_pending), &mut inactivated);
        match outcome {
            Ok(()) => {
                // The target has the VM. End this copy first (it never runs again), and only
                // if nothing else ended it meanwhile tell the target to run it: exactly one
                // of the two runs on. An embedder must not let its process end before this
                // returns, or `Go` is lost (and the guest runs nowhere).
                let downtime = paused_at.elapsed();
                if let Err(reason) = lifecycle.commit_migration() {
                    resume_devices(buses);
                    lifecycle.set_migrating(false);
                    return Err(MigrationError::Vm(format!(
                        "the VM ended ({reason}) before the handover: the target does not run it"
                    )));
                }
                // The parked vCPUs leave for good: their threads end before the target runs.
                self.join_threads();
                let go = wire::write_message(tx.stream, &Message::Go);
                let _ = tx.stream.flush();
                if let Err(e) = go {
                    log::warn!(
                        "migration: telling the target to run the VM failed ({e}); the VM is stopped on both sides"
                    );
                }
                tx.publish(MigrationPhase::Completed, |p| p.downtime = Some(downtime));
                Ok(tx.control.progress())
            }
            Err(e) => {
                // The disks' locks come back before the guest may write again; a disk whose
                // lock someone else took meanwhile must not be written: the VM stays paused.
                if inactivated && let Err((index, lost)) = activate_all(self.migration_disks()) {
                    lifecycle.set_migrating(false);
                    log::error!(
                        "migration failed ({e}) and disk {index} could not be locked again ({lost}): the VM stays paused"
                    );
                    return Err(MigrationError::Vm(format!(
                        "{e}; then disk {index} could not be locked again ({lost}): the VM stays paused so that two guests never write it"
                    )));
                }
                resume_devices(buses);
                lifecycle.set_migrating(false);
                if was_running && let Err(r) = lifecycle.resume() {
                    log::error!("migration failed ({e}) and the VM could not resume: {r}");
                }
                Err(e)
            }
        }
    }

    /// With the vCPUs parked: saves vCPUs, machine and devices (devices quiesce), sends the
    /// last dirty pages and the state, and waits for the target's ack.
    fn stop_and_copy<S: Read + Write>(
        &self,
        tx: &mut Sender<'_, S>,
        log: &DirtyLog<'_>,
        mut pending: Vec<u64>,
        (copy, disk_pending): (&DiskCopy<'_>, Vec<Range>),
        inactivated: &mut bool,
    ) -> Result<(), MigrationError> {
        let (lifecycle, buses, vm_fd) = self.migration_parts();
        let memory = self.memory();
        let vcpu_states = lifecycle.save_vcpu_states(PAUSE_TIMEOUT).map_err(vm_err)?;
        let devices = save_devices(buses).map_err(vm_err)?;
        let machine = MachineState::save(vm_fd).map_err(vm_err)?;
        // Devices have finished their in-flight requests: what they wrote is in the log now.
        pending.extend(log.take()?);
        pending.sort_unstable();
        pending.dedup();
        tx.send_pages(&pending, false)?;
        // The disks' last writes: the devices finished their requests before they saved.
        let disk_pending = disks::merge(disk_pending, copy.take_dirty());
        tx.send_disks(copy, &disk_pending, false)?;
        // The firmware's variable store: the guest writes it directly, unlogged (paused now).
        if let Some(firmware) = self.firmware_state() {
            tx.send(&Message::Firmware(firmware))?;
        }
        let layout = MemoryLayout::of_memory(memory);
        let state = SnapshotState {
            vcpus: vcpu_states.len() as u32,
            memory_size: layout.file_size(),
            memory_id: 0,
            layout,
            machine,
            vcpu_states,
            devices,
        };
        // The devices are quiesced and their disks flushed (`save_devices`): give up the
        // disks' write locks, so the target can take them before it acks.
        inactivate_all(self.migration_disks())
            .map_err(|(index, source)| MigrationError::DiskLock { index, source })?;
        *inactivated = true;
        tx.send(&Message::State(seal(&state.encode())))?;
        tx.stream.flush().map_err(|source| WireError::Io {
            op: "flush",
            source,
        })?;
        tx.expect("Ack")?;
        Ok(())
    }
}
