//! The VMI's machine across guest reboots: kubevirt-vmm's `Vm` ends when the guest resets, so
//! the launcher builds a fresh one over the same disks (containerDisk overlays included), tap
//! and console, as QEMU resets in place for upstream. Also where the control API's hard reset
//! and soft reboot (ACPI power button, then a restart instead of the power-off) are carried out.

use super::RunError;
use super::device_stats::{Counted, DeviceStats};
use kubevirt_vmm::virtio::block::{
    BackendError, Block, BlockBackend, DiskMigration, ErrorPolicy, GuestBuffers, RawFile,
};
use kubevirt_vmm::virtio::net::{Net, NetConfig, Tap};
use kubevirt_vmm::virtio::rng::Rng;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm, VmBuilder, VmConfig};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long a restart waits for others to drop the old VM.
const OLD_VM_RELEASE: Duration = Duration::from_millis(500);

/// A disk image (a containerDisk's qcow2 overlay over its base) shared by the successive VMs
/// of one VMI: opened once, so its writes and its locks survive a guest reboot, as they do
/// upstream while the pod lives.
#[derive(Clone)]
pub struct SharedImage(pub Arc<Mutex<Box<dyn BlockBackend>>>);

impl std::fmt::Debug for SharedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedImage")
    }
}

impl SharedImage {
    /// Shares `image`.
    pub fn new(image: Box<dyn BlockBackend>) -> Self {
        SharedImage(Arc::new(Mutex::new(image)))
    }

    fn get(&self) -> std::sync::MutexGuard<'_, Box<dyn BlockBackend>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BlockBackend for SharedImage {
    fn size(&self) -> u64 {
        self.get().size()
    }
    fn read_only(&self) -> bool {
        self.get().read_only()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.get().read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.get().write_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.get().flush()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.get().discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.get().write_zeroes(offset, len)
    }
    fn has_volatile_cache(&self) -> bool {
        self.get().has_volatile_cache()
    }
    fn inactivate(&mut self) -> Result<(), BackendError> {
        self.get().inactivate()
    }
    fn activate(&mut self) -> Result<(), BackendError> {
        self.get().activate()
    }
    fn read_to_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        self.get().read_to_guest(bufs, offset)
    }
    fn write_from_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> io::Result<()> {
        self.get().write_from_guest(bufs, offset)
    }
}

/// Where a disk's data is.
#[derive(Debug, Clone)]
pub enum DiskBacking {
    /// A file or block device, opened (and locked) once for the machine; each VM gets a
    /// duplicate handle, so the image stays held across reboots.
    File(Arc<RawFile>),
    /// An image opened once for the machine (a containerDisk's overlay).
    Image(SharedImage),
}

/// One virtio-blk disk.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// Disk name (for messages).
    pub name: String,
    /// Data.
    pub backing: DiskBacking,
    /// Serial the guest reads.
    pub serial: String,
    /// How a live migration moves it: a disk that lives with the VMI (a containerDisk's
    /// overlay, an emptyDisk) is copied to the target's fresh one; one on storage both reach
    /// (a claim, a hostDisk) or read-only (bases, cloud-init and projected ISOs, which the
    /// target builds identically) stays, only its lock moves.
    pub migration: DiskMigration,
    /// What a backend error does.
    pub error_policy: ErrorPolicy,
}

/// Everything needed to build the VM again.
#[derive(Debug)]
pub struct MachineSpec {
    /// The VM configuration without its serial console.
    pub config: VmConfig,
    /// The console pipe's write end: each VM gets a duplicate.
    pub console: Option<OwnedFd>,
    /// Disks in order.
    pub disks: Vec<DiskSpec>,
    /// Attach virtio-rng.
    pub rng: bool,
    /// virtio-net: MAC and the tap (each VM gets a duplicate descriptor).
    pub net: Option<([u8; 6], OwnedFd)>,
    /// The devices' counters, kept across the VMs built from this spec.
    pub stats: DeviceStats,
}

impl MachineSpec {
    /// A new VM (not started).
    pub fn build(&self) -> Result<Vm, RunError> {
        Ok(self.builder()?.build()?)
    }

    /// A VM received from a live migration at `addr` (see `super::incoming`; not started:
    /// starting it continues the guest where the source paused it).
    pub fn receive(&self, addr: &str) -> Result<Vm, RunError> {
        super::incoming::receive(self.builder()?, addr)
    }

    /// A VM resumed from the memory-state snapshot in `dir` (not started: starting it
    /// continues the guest where it was saved). The snapshot must be of a VM built from the
    /// same spec.
    pub fn restore(&self, dir: &Path) -> Result<Vm, RunError> {
        Ok(self.builder()?.restore(dir)?)
    }

    fn builder(&self) -> Result<VmBuilder, RunError> {
        let c = &self.config;
        let config = VmConfig {
            vcpus: c.vcpus,
            topology: c.topology,
            memory_size: c.memory_size,
            memory: c.memory,
            boot: c.boot.clone(),
            // autoattachSerialConsole: false means no serial port at all, as upstream.
            serial: match &self.console {
                Some(fd) => Some(ConsoleConfig::Fd(
                    fd.try_clone().map_err(RunError::Descriptor)?,
                )),
                None => None,
            },
            cpu_features: c.cpu_features.clone(),
            debug_exit: c.debug_exit,
            acpi: c.acpi,
            smbios: c.smbios.clone(),
            fw_cfg_files: c.fw_cfg_files.clone(),
        };
        let mut builder = Vm::builder(config);
        for d in &self.disks {
            let backend: Box<dyn BlockBackend> = match &d.backing {
                DiskBacking::File(file) => {
                    Box::new(file.try_clone().map_err(RunError::Descriptor)?)
                }
                DiskBacking::Image(o) => Box::new(o.clone()),
            };
            let backend = Box::new(Counted::new(backend, self.stats.disk(&d.name)));
            builder = builder.virtio_device(Box::new(
                Block::new(backend, &d.serial)
                    .with_migration(d.migration)
                    .with_error_policy(d.error_policy)
                    .with_name(&d.name),
            ));
        }
        if self.rng {
            builder = builder.virtio_device(Box::new(Rng::new()));
        }
        if let Some((mac, fd)) = &self.net {
            let tap = Tap::from_fd(fd.try_clone().map_err(RunError::Descriptor)?)?;
            let net = Net::new(NetConfig {
                mac: *mac,
                backend: Box::new(tap),
            });
            self.stats.add_nic(net.counters());
            builder = builder.virtio_device(Box::new(net));
        }
        Ok(builder)
    }
}

/// Where a machine's first VM comes from.
#[derive(Debug, Clone, Copy)]
pub enum FirstVm<'a> {
    /// Boot it.
    Boot,
    /// Resume the memory-state snapshot in this directory.
    Restore(&'a Path),
    /// Receive it from a live migration at this address (`unix:PATH`, `tcp:IP:PORT`).
    Incoming(&'a str),
}

/// What to do when the current VM ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// End, unless the guest asked for a reset.
    Nothing,
    /// A hard reset was asked for: restart whatever the exit.
    Reset,
    /// A soft reboot: restart when the guest powers off.
    RebootOnPowerOff,
}

/// The machine: the current VM and how to replace it.
#[derive(Debug)]
pub struct Machine {
    spec: MachineSpec,
    current: Mutex<Arc<Vm>>,
    pending: Mutex<Pending>,
    shutting_down: AtomicBool,
    finished: AtomicBool,
    restarts: AtomicU64,
}

impl Machine {
    /// Builds and starts the first VM.
    pub fn start(spec: MachineSpec) -> Result<Arc<Machine>, RunError> {
        Machine::start_from(spec, FirstVm::Boot)
    }

    /// Starts the first VM: booted, resumed from a snapshot, or received from a live
    /// migration. A reset or reboot later boots the spec afresh.
    pub fn start_from(spec: MachineSpec, first: FirstVm<'_>) -> Result<Arc<Machine>, RunError> {
        let vm = Arc::new(match first {
            FirstVm::Restore(dir) => spec.restore(dir)?,
            FirstVm::Incoming(addr) => spec.receive(addr)?,
            FirstVm::Boot => spec.build()?,
        });
        vm.start()?;
        Ok(Arc::new(Machine {
            spec,
            current: Mutex::new(vm),
            pending: Mutex::new(Pending::Nothing),
            shutting_down: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
        }))
    }

    /// The VM running now.
    pub fn vm(&self) -> Arc<Vm> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The devices' counters (the `stats` request).
    pub fn device_stats(&self) -> &DeviceStats {
        &self.spec.stats
    }

    /// How often the VM was rebuilt (guest reboots and resets).
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// Whether the machine has ended for good.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// From now on the machine ends when the VM does (a shutdown is under way).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Pending::Nothing;
    }

    /// Hard reset: the VM is stopped and a fresh one starts over the same disks.
    pub fn reset(&self) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Pending::Reset;
        self.vm().stop();
    }

    /// Soft reboot: the power button is pressed and, when the guest powers off, a fresh VM
    /// starts instead of the machine ending.
    pub fn soft_reboot(&self) -> Result<(), RunError> {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Pending::RebootOnPowerOff;
        Ok(self.vm().press_power_button()?)
    }

    /// Waits up to `timeout` for the VM to end. A reset, a guest reboot or a pending soft
    /// reboot starts a fresh VM and returns `None` (never after a migration); otherwise the
    /// machine is finished and the exit is returned. Call it in a loop from one thread.
    pub fn supervise(&self, timeout: Duration) -> Result<Option<ExitReason>, RunError> {
        let Some(exit) = self.vm().wait_timeout(timeout) else {
            return Ok(None);
        };
        let pending = std::mem::replace(
            &mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner),
            Pending::Nothing,
        );
        // A migrated guest runs in another launcher now: nothing here may start it again,
        // not even a reset asked for while it was moving.
        let restart = !self.shutting_down.load(Ordering::SeqCst)
            && exit != ExitReason::Migrated
            && match pending {
                Pending::Reset => true,
                Pending::RebootOnPowerOff => exit == ExitReason::PowerOff,
                Pending::Nothing => exit == ExitReason::Reset,
            };
        if !restart {
            self.finished.store(true, Ordering::SeqCst);
            return Ok(Some(exit));
        }
        self.restart()?;
        Ok(None)
    }

    fn restart(&self) -> Result<(), RunError> {
        let fresh = Arc::new(self.spec.build()?);
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
            fresh.clone(),
        );
        // The old VM's device threads (the tap reader among them) end when it is dropped:
        // give transient holders (a control request, console input) a moment to let go, so
        // the new VM's tap reader is the only one. A holder that keeps it longer only delays
        // the old threads' end; the old VM is stopped and touches nothing.
        let deadline = std::time::Instant::now() + OLD_VM_RELEASE;
        while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(old);
        self.restarts.fetch_add(1, Ordering::SeqCst);
        Ok(fresh.start()?)
    }
}
