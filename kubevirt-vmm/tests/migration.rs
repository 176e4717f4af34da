//! Live migration on real vCPUs between two VMs over a Unix socket pair: a guest that keeps
//! dirtying memory moves while it runs and counts on where it was, with RAM equal on both
//! sides; a guest streaming to virtio-blk moves with requests in flight and finishes its
//! stream; what a device writes into guest RAM from a host thread arrives, and without the
//! tracking of the VMM's own writes it does not (the mutation check); a target with another configuration, a broken stream and a cancel
//! leave the source running, and the target reports a named reason.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Recorder, assert_stream_finished, marks_of, migrate, wait};
use kubevirt_vmm::migration::{IGNORE_VMM_WRITES, MigrationPhase};
use kubevirt_vmm::testguest::REPORT_PORT;
use kubevirt_vmm::testguest::blk_stream_run::create_image;
use kubevirt_vmm::testguest::programs::{
    self, COUNTER_ADDR, COUNTER_BOOTS_ADDR, COUNTER_RELEASE_ADDR,
};
use kubevirt_vmm::testguest::virtio_blk_stream::{Marks, STREAM_MEMORY_SIZE, virtio_blk_stream};
use kubevirt_vmm::threads::{VmmThread, set_thread_start_hook};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{
    ConsoleConfig, ExitReason, MigrationControl, MigrationError, MigrationOptions,
    MigrationProgress, Vm, VmBuilder, VmConfig, VmState,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::tempdir::TempDir;

/// RAM of the dirtying guest.
const DIRTY_RAM: u64 = 64 << 20;
/// Where it dirties, and how much.
const DIRTY_START: u64 = 8 << 20;
const DIRTY_LEN: u64 = 16 << 20;
/// Stream guest: MiB written then read, requests in flight; long enough to still run when
/// the full copy is done.
const STREAM_MIB: u32 = 512;
const DEPTH: u32 = 4;

fn read_u64(vm: &Vm, addr: u64) -> u64 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    kubevirt_testsupport::eventually_within(common::GUEST_TIMEOUT, what, || cond().then_some(()));
}

fn dirty_config() -> VmConfig {
    let guest = programs::dirty_loop(DIRTY_START, DIRTY_LEN).unwrap();
    VmConfig::new(1, DIRTY_RAM, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit()
}

fn report(what: &str, p: &MigrationProgress) {
    println!(
        "MIGRATED {what}: rounds={} bytes={} pages={} zero_pages={} last_dirty={} dirty_rate={}/s bandwidth={:.0}MiB/s total={:?} downtime={:?}",
        p.rounds,
        p.bytes_sent,
        p.pages_sent,
        p.zero_pages,
        p.dirty_pages,
        p.dirty_rate_pages_per_sec,
        p.bandwidth_bytes_per_sec as f64 / f64::from(1 << 20),
        p.elapsed,
        p.downtime
    );
}

/// Every byte of the two VMs' RAM is equal.
fn assert_same_memory(a: &Vm, b: &Vm) {
    let mut x = vec![0u8; 1 << 20];
    let mut y = vec![0u8; 1 << 20];
    for region in a.memory().iter() {
        let mut off = 0;
        while off < region.len() {
            let addr = GuestAddress(region.start_addr().0 + off);
            a.memory().read_slice(&mut x, addr).unwrap();
            b.memory().read_slice(&mut y, addr).unwrap();
            assert!(x == y, "RAM differs in the MiB at {:#x}", addr.0);
            off += x.len() as u64;
        }
    }
}

#[test]
fn a_guest_dirtying_memory_migrates_and_counts_on_where_it_was() {
    let source = Vm::new(dirty_config()).unwrap();
    source.start().unwrap();
    wait_for("the guest to dirty its RAM a few times", || {
        read_u64(&source, COUNTER_ADDR) > 3
    });
    let control = MigrationControl::new();
    let t0 = Instant::now();
    let (sent, received) = migrate(
        &source,
        Vm::builder(dirty_config()),
        &MigrationOptions::default(),
        &control,
    );
    let stats = sent.unwrap();
    let target = received.unwrap();
    report("dirty_loop 16 MiB of 64 MiB", &stats);
    assert_eq!(stats.phase, MigrationPhase::Completed);
    assert!(stats.rounds >= 1 && stats.downtime.is_some(), "{stats:?}");
    assert!(
        stats.zero_pages > (DIRTY_RAM - DIRTY_LEN) / 4096 / 2,
        "untouched RAM goes as zero pages: {stats:?}"
    );
    assert_eq!(control.progress(), stats);
    // The source gave the VM up for good.
    assert_eq!(wait(&source), ExitReason::Migrated);
    let err = source.resume().unwrap_err().to_string();
    assert!(
        err.contains("exited"),
        "a migrated source never resumes: {err}"
    );

    // Before the target runs: its RAM is the source's, byte for byte, and consistent.
    assert_eq!(target.state(), VmState::Created);
    assert_same_memory(&source, &target);
    let at = read_u64(&target, COUNTER_ADDR);
    assert!(at > 3, "the counter came over: {at}");
    let mut seen_next = false;
    for page in 0..DIRTY_LEN / 4096 {
        let v = read_u64(&target, DIRTY_START + page * 4096);
        match v {
            v if v == at + 1 && !seen_next && page == 0 => seen_next = true,
            v if v == at + 1 && seen_next => {}
            v if v == at => seen_next = false,
            v => panic!("page {page} holds {v}, the counter is {at}: a page was not carried over"),
        }
    }

    target.start().unwrap();
    wait_for("the migrated guest to count on", || {
        read_u64(&target, COUNTER_ADDR) > at + 3
    });
    assert_eq!(read_u64(&target, COUNTER_BOOTS_ADDR), 1, "no second boot");
    target
        .memory()
        .write_obj(1u64, GuestAddress(COUNTER_RELEASE_ADDR))
        .unwrap();
    assert_eq!(wait(&target), ExitReason::DebugExit { code: 0 });
    println!(
        "migration of the dirtying guest took {:?} end to end",
        t0.elapsed()
    );
}

/// The stream VM on `disk`, with a recorder for the guest's phase marks; not yet built.
fn stream_vm(disk: RawFile) -> (VmBuilder, Arc<Mutex<Recorder>>) {
    let guest = virtio_blk_stream(STREAM_MIB, DEPTH, Marks::ReportPort).unwrap();
    let config = VmConfig::new(1, STREAM_MEMORY_SIZE, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit();
    let marks = Recorder::shared(0);
    let block = Block::new(Box::new(disk), "migrate");
    let builder = Vm::builder(config)
        .pio_device(REPORT_PORT, 4, marks.clone())
        .virtio_device(Box::new(block));
    (builder, marks)
}

/// Starts the stream guest on `disk`, migrates it once it is writing; returns the target
/// (started) and its marks.
fn migrate_streaming_guest(
    disk: &Path,
    options: &MigrationOptions,
) -> (Vm, Arc<Mutex<Recorder>>, MigrationProgress) {
    let file = RawFile::open(disk, false).unwrap();
    // The target shares the source's open file (and so its image lock), as a disk on shared
    // storage is one image for both.
    let target_file = file.try_clone().unwrap();
    let (builder, marks) = stream_vm(file);
    let source = builder.build().unwrap();
    source.start().unwrap();
    wait_for("the guest to start writing", || {
        marks_of(&marks).contains(&1)
    });
    let (target_builder, target_marks) = stream_vm(target_file);
    let (sent, received) = migrate(&source, target_builder, options, &MigrationControl::new());
    let stats = sent.unwrap();
    let target = received.unwrap();
    assert_eq!(wait(&source), ExitReason::Migrated);
    let seen = marks_of(&marks);
    assert!(
        !seen.contains(&3),
        "the stream finished before it migrated ({seen:?}): nothing was in flight"
    );
    target.start().unwrap();
    (target, target_marks, stats)
}

#[test]
fn a_guest_streaming_to_virtio_blk_migrates_with_requests_in_flight() {
    let tmp = TempDir::new().unwrap();
    let disk = tmp.as_path().join("disk.raw");
    create_image(&disk, STREAM_MIB).unwrap();
    // One full copy, then the pause: the stream is still writing.
    let options = MigrationOptions {
        max_rounds: 1,
        ..MigrationOptions::default()
    };
    let (target, marks, stats) = migrate_streaming_guest(&disk, &options);
    report("virtio-blk stream", &stats);
    assert_stream_finished(&target, wait(&target));
    let seen = marks_of(&marks);
    assert!(
        seen.contains(&3) && !seen.contains(&1),
        "the target went on: {seen:?}"
    );
}

/// A device of the embedding program that writes guest RAM from a host thread — as virtio
/// devices do — every 100 us while the VM runs, and quiesces when the VM is saved (its
/// `save_state`, called by the migration's stop-and-copy, stops the writer), as they do.
struct HostWriter {
    quiesce: Arc<AtomicBool>,
    quiesced: Arc<AtomicBool>,
}

/// Where [`HostWriter`]'s thread writes its counter: a page the guest never touches.
const WRITER_ADDR: u64 = 0x30_0000;
const WRITER_PORT: u16 = 0xe010;

impl kubevirt_vmm::BusDevice for HostWriter {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}
    fn snapshot_name(&self) -> &'static str {
        "host-writer"
    }
    fn save_state(&mut self) -> Result<Option<Vec<u8>>, kubevirt_vmm::DeviceStateError> {
        self.quiesce.store(true, Ordering::SeqCst);
        while !self.quiesced.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        Ok(None)
    }
    fn resume(&mut self) {
        self.quiesce.store(false, Ordering::SeqCst);
    }
}

/// Migrates the dirtying guest with a [`HostWriter`] writing guest RAM throughout; returns
/// the source, the target (not started) and the writer's last value.
fn migrate_with_host_writes() -> (Vm, Vm, u64) {
    let quiesce = Arc::new(AtomicBool::new(false));
    let quiesced = Arc::new(AtomicBool::new(false));
    let writer = HostWriter {
        quiesce: quiesce.clone(),
        quiesced: quiesced.clone(),
    };
    let source = Vm::builder(dirty_config())
        .pio_device(WRITER_PORT, 1, Arc::new(Mutex::new(writer)))
        .build()
        .unwrap();
    source.start().unwrap();
    let memory = source.memory().clone();
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let written = last.clone();
    let thread = std::thread::spawn(move || {
        let mut n = 0u64;
        while !Arc::strong_count(&written).eq(&1) {
            if quiesce.load(Ordering::SeqCst) {
                quiesced.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            quiesced.store(false, Ordering::SeqCst);
            n += 1;
            memory.write_obj(n, GuestAddress(WRITER_ADDR)).unwrap();
            written.store(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    wait_for("the guest to dirty", || read_u64(&source, COUNTER_ADDR) > 1);
    let target = Vm::builder(dirty_config()).pio_device(
        WRITER_PORT,
        1,
        Arc::new(Mutex::new(HostWriter {
            quiesce: Arc::new(AtomicBool::new(true)),
            quiesced: Arc::new(AtomicBool::new(true)),
        })),
    );
    let (sent, received) = migrate(
        &source,
        target,
        &MigrationOptions::default(),
        &MigrationControl::new(),
    );
    sent.unwrap();
    let target = received.unwrap();
    let value = last.load(Ordering::SeqCst);
    drop(last);
    thread.join().unwrap();
    (source, target, value)
}

#[test]
fn what_the_vmm_writes_into_guest_ram_while_migrating_arrives() {
    let (source, target, written) = migrate_with_host_writes();
    assert!(
        written > 10,
        "the host wrote during the migration: {written}"
    );
    assert_eq!(read_u64(&target, WRITER_ADDR), written);
    assert_same_memory(&source, &target);
}

/// Mutation check: with the VMM's writes left out of the dirty set (only KVM's log read, as a
/// VMM without the guest-memory bitmaps would), the host's writes made after their page went
/// over are lost. Runs in a child process: the switch is global.
#[test]
fn without_tracking_the_vmms_writes_they_are_lost() {
    let stdout = common::run_child_test("mutation_child", &[]);
    assert!(stdout.contains("MUTATION LOST HOST WRITES"), "{stdout}");
}

#[test]
#[ignore = "run in a child process by without_tracking_the_vmms_writes_they_are_lost"]
fn mutation_child() {
    IGNORE_VMM_WRITES.store(true, Ordering::SeqCst);
    let (_source, target, written) = migrate_with_host_writes();
    let arrived = read_u64(&target, WRITER_ADDR);
    assert!(
        arrived < written,
        "the host's last write ({written}) arrived although only KVM's log was read"
    );
    println!("MUTATION LOST HOST WRITES: the target has {arrived}, the host wrote up to {written}");
}

/// A source that keeps counting after a failed migration, and the error the source saw.
fn assert_source_counts_on(source: &Vm) {
    assert_eq!(source.state(), VmState::Running);
    let now = read_u64(source, COUNTER_ADDR);
    wait_for("the source to count on", || {
        read_u64(source, COUNTER_ADDR) > now + 2
    });
}

#[test]
fn a_target_with_another_configuration_refuses_and_the_source_runs_on() {
    let source = Vm::new(dirty_config()).unwrap();
    source.start().unwrap();
    let guest = programs::dirty_loop(DIRTY_START, DIRTY_LEN).unwrap();
    let other = VmConfig::new(1, DIRTY_RAM * 2, guest.boot_source()).with_debug_exit();
    let (sent, received) = migrate(
        &source,
        Vm::builder(other),
        &MigrationOptions::default(),
        &MigrationControl::new(),
    );
    let target_err = received.unwrap_err().to_string();
    assert!(
        target_err.contains("the source VM has 1 vCPUs and 0x4000000 bytes")
            && target_err.contains("0x8000000"),
        "{target_err}"
    );
    let source_err = sent.unwrap_err().to_string();
    assert!(
        source_err.contains("the migration target reported") && source_err.contains("0x8000000"),
        "{source_err}"
    );
    assert_source_counts_on(&source);
    source.stop();
}

#[test]
fn a_cancelled_migration_leaves_the_source_running() {
    let source = Vm::new(dirty_config()).unwrap();
    source.start().unwrap();
    let control = MigrationControl::new();
    control.cancel();
    let (sent, received) = migrate(
        &source,
        Vm::builder(dirty_config()),
        &MigrationOptions::default(),
        &control,
    );
    assert!(matches!(sent, Err(MigrationError::Cancelled)), "{sent:?}");
    assert_eq!(control.progress().phase, MigrationPhase::Failed);
    let target_err = received.unwrap_err().to_string();
    assert!(target_err.contains("cancelled"), "{target_err}");
    assert_source_counts_on(&source);
    source.stop();
}

/// The handover: when the target is told to run (its `migrate_from` returns), every vCPU thread
/// of the source has ended, so the guest's vCPUs never exist on both sides at once, not even a
/// source's on their way out (a runnable thread that waits for a CPU looks like a running
/// guest from outside). Runs in a child process: it tells vCPU threads apart by the VMM's
/// thread-start hook, which is global.
#[test]
fn the_sources_vcpu_threads_have_ended_when_the_target_is_told_to_run() {
    let stdout = common::run_child_test("handover_child", &[]);
    assert!(stdout.contains("HANDOVER"), "{stdout}");
}

static VCPUS_STARTED: AtomicUsize = AtomicUsize::new(0);
static VCPUS_ENDED: AtomicUsize = AtomicUsize::new(0);

/// Counts its thread as ended when the thread's locals are dropped, the last thing it does.
struct Ends;

impl Drop for Ends {
    fn drop(&mut self) {
        VCPUS_ENDED.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static ENDS: Ends = const { Ends };
}

fn count_vcpu_thread(kind: VmmThread) {
    if kind == VmmThread::Vcpu {
        VCPUS_STARTED.fetch_add(1, Ordering::SeqCst);
        ENDS.with(|_| ());
    }
}

#[test]
#[ignore = "run in a child process by the_sources_vcpu_threads_have_ended_when_the_target_is_told_to_run"]
fn handover_child() {
    assert!(set_thread_start_hook(count_vcpu_thread));
    let source = Vm::new(dirty_config()).unwrap();
    source.start().unwrap();
    wait_for("the guest to dirty its RAM a few times", || {
        read_u64(&source, COUNTER_ADDR) > 3
    });
    let (mut a, mut b) = UnixStream::pair().unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(common::GUEST_TIMEOUT)).unwrap();
    }
    let receiver = std::thread::spawn(move || {
        let received = Vm::builder(dirty_config()).migrate_from(&mut b);
        let counted = (
            VCPUS_STARTED.load(Ordering::SeqCst),
            VCPUS_ENDED.load(Ordering::SeqCst),
        );
        (received, counted)
    });
    let sent = source.migrate_to(
        &mut a,
        &MigrationOptions::default(),
        &MigrationControl::new(),
    );
    let (received, (started, ended)) = receiver.join().unwrap();
    sent.unwrap();
    let target = received.unwrap();
    assert_eq!(
        (started, ended),
        (1, 1),
        "vCPU threads started and ended when the target was told to run"
    );
    target.start().unwrap();
    wait_for("the migrated guest to count on", || {
        read_u64(&target, COUNTER_ADDR) > 3
    });
    target.stop();
    println!("HANDOVER: the source's {started} vCPU thread had ended before the target ran");
}

/// A stream that garbles one byte after `at` bytes went through, or ends there.
struct Garble<S> {
    inner: S,
    written: usize,
    at: usize,
    cut: bool,
}

impl<S: Read> Read for Garble<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Garble<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut b = buf.to_vec();
        if self.cut && self.written > self.at {
            return Err(std::io::Error::other("the test cut the stream"));
        }
        if self.written <= self.at && self.at < self.written + b.len() {
            if self.cut {
                self.written = self.at + 1;
                return Err(std::io::Error::other("the test cut the stream"));
            }
            b[self.at - self.written] ^= 0x40;
        }
        self.inner.write_all(&b)?;
        self.written += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn garbled_migration(at: usize, cut: bool) -> (String, String) {
    let source = Vm::new(dirty_config()).unwrap();
    source.start().unwrap();
    wait_for("the guest to dirty", || read_u64(&source, COUNTER_ADDR) > 1);
    let (a, mut b) = UnixStream::pair().unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(common::GUEST_TIMEOUT)).unwrap();
    }
    let receiver = std::thread::spawn(move || Vm::builder(dirty_config()).migrate_from(&mut b));
    let mut stream = Garble {
        inner: a.try_clone().unwrap(),
        written: 0,
        at,
        cut,
    };
    let sent = source.migrate_to(
        &mut stream,
        &MigrationOptions::default(),
        &MigrationControl::new(),
    );
    if cut {
        // The source's socket closes as a killed source's would.
        a.shutdown(std::net::Shutdown::Both).unwrap();
    }
    let received = receiver.join().unwrap();
    let source_err = sent.unwrap_err().to_string();
    assert_source_counts_on(&source);
    source.stop();
    (source_err, received.unwrap_err().to_string())
}

#[test]
fn a_garbled_page_is_refused_by_the_target_and_the_source_runs_on() {
    // Inside the first Pages frame (preamble 12 + Hello 37 bytes come before it).
    let (source_err, target_err) = garbled_migration(5000, false);
    assert!(target_err.contains("CRC-32"), "{target_err}");
    assert!(
        source_err.contains("CRC-32"),
        "the target's reason reaches the source: {source_err}"
    );
}

#[test]
fn a_stream_cut_mid_copy_leaves_the_source_running_and_the_target_names_it() {
    let (source_err, target_err) = garbled_migration(200_000, true);
    assert!(
        source_err.contains("the test cut the stream"),
        "{source_err}"
    );
    assert!(target_err.contains("truncated"), "{target_err}");
}

#[test]
fn a_page_outside_ram_is_refused_by_name_and_the_target_reports_it() {
    use kubevirt_vmm::migration::wire::{self, Hello, Message, PAGE_SIZE, Page};
    let (mut source, mut b) = UnixStream::pair().unwrap();
    for s in [&source, &b] {
        s.set_read_timeout(Some(common::GUEST_TIMEOUT)).unwrap();
    }
    let receiver = std::thread::spawn(move || Vm::builder(dirty_config()).migrate_from(&mut b));
    wire::write_preamble(&mut source).unwrap();
    let hello = Hello {
        vcpus: 1,
        memory_size: DIRTY_RAM,
        regions: vec![(0, DIRTY_RAM)],
        disks: vec![],
    };
    wire::write_message(&mut source, &Message::Hello(hello)).unwrap();
    assert_eq!(wire::read_message(&mut source).unwrap(), Message::Ready);
    let page = |gpa| Page::Data(gpa, Box::new([7u8; PAGE_SIZE]));
    let pages = vec![page(0x1000), page(DIRTY_RAM)];
    wire::write_message(&mut source, &Message::Pages { round: 0, pages }).unwrap();
    let err = receiver.join().unwrap().unwrap_err();
    assert!(
        matches!(err, MigrationError::BadPage(a) if a == DIRTY_RAM),
        "{err}"
    );
    match wire::read_message(&mut source).unwrap() {
        Message::Error(reason) => assert!(
            reason.contains("0x4000000") && reason.contains("not a page of the announced RAM"),
            "{reason}"
        ),
        other => panic!("the target answered {other:?}"),
    }
}
