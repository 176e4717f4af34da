//! Live migration of a VM's disks, on real vCPUs between two VMs over a Unix socket pair: a
//! disk that lives with the VMI (`DiskMigration::Copy`) while the virtio-blk stream guest
//! writes it arrives byte for byte on the target's own fresh disk, and the guest finishes its
//! stream there with no errors; a target whose disks differ refuses; a disk chunk outside the
//! target's copied disks is refused by name. (The lock handover of shared disks is tested
//! between two launcher processes in kubevirt-launcher's tests/migrate_disks.rs.)

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;

use common::{Recorder, assert_stream_finished, marks_of, migrate, wait};
use kubevirt_vmm::testguest::REPORT_PORT;
use kubevirt_vmm::testguest::blk_stream_run::create_image;
use kubevirt_vmm::testguest::programs::{self, COUNTER_ADDR};
use kubevirt_vmm::testguest::virtio_blk_stream::{Marks, STREAM_MEMORY_SIZE, virtio_blk_stream};
use kubevirt_vmm::virtio::block::{Block, BlockBackend, DiskMigration, GuestBuffers, RawFile};
use kubevirt_vmm::{
    ConsoleConfig, ExitReason, MigrationControl, MigrationError, MigrationOptions, Vm, VmConfig,
    VmState,
};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

/// RAM of the counting guest.
const DIRTY_RAM: u64 = 64 << 20;
/// Stream guest: MiB written then read, requests in flight.
const STREAM_MIB: u32 = 512;
const DEPTH: u32 = 4;

fn read_u64(vm: &Vm, addr: u64) -> u64 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    kubevirt_testsupport::eventually_within(common::GUEST_TIMEOUT, what, || cond().then_some(()));
}

fn dirty_config() -> VmConfig {
    let guest = programs::dirty_loop(8 << 20, 16 << 20).unwrap();
    VmConfig::new(1, DIRTY_RAM, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit()
}

fn assert_source_counts_on(source: &Vm) {
    assert_eq!(source.state(), VmState::Running);
    let now = read_u64(source, COUNTER_ADDR);
    wait_for("the source to count on", || {
        read_u64(source, COUNTER_ADDR) > now + 2
    });
}

/// Every byte of the two files is equal; returns how many of their MiBs hold data.
fn assert_same_file(a: &Path, b: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let len = fa.metadata().unwrap().len();
    assert_eq!(len, fb.metadata().unwrap().len(), "sizes differ");
    let (mut x, mut y, zero) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut data = 0;
    let mut off = 0;
    while off < len {
        let n = (len - off).min(1 << 20) as usize;
        fa.read_exact_at(&mut x[..n], off).unwrap();
        fb.read_exact_at(&mut y[..n], off).unwrap();
        assert!(x[..n] == y[..n], "the disks differ in the MiB at {off:#x}");
        data += u64::from(x[..n] != zero[..n]);
        off += n as u64;
    }
    data
}

/// A raw disk whose guest writes take at least [`WRITE_PACE`] each, and [`SLOW_PACE`] once the
/// guest wrote [`PACED_WRITES`] of them: the source's stream guest then has written a good part
/// of its disk when the migration starts, yet takes ~45 s to write it all, far longer than a
/// debug-build migration on a loaded CI machine takes to pause it (at a flat 10 ms a request it
/// sometimes finished its 512 MiB first, and once on CI the guest exited before the handover).
struct Paced {
    disk: RawFile,
    writes: u32,
}

/// The least time one of the first [`PACED_WRITES`] guest write requests takes.
const WRITE_PACE: std::time::Duration = std::time::Duration::from_millis(10);
/// The least time each later guest write request takes.
const SLOW_PACE: std::time::Duration = std::time::Duration::from_millis(100);
/// How many write requests go at [`WRITE_PACE`].
const PACED_WRITES: u32 = 64;

impl BlockBackend for Paced {
    fn size(&self) -> u64 {
        self.disk.size()
    }
    fn read_only(&self) -> bool {
        self.disk.read_only()
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.disk.read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.disk.write_at(buf, offset)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.disk.flush()
    }
    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.disk.discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.disk.write_zeroes(offset, len)
    }
    fn allocated_extents(&mut self) -> std::io::Result<Vec<(u64, u64)>> {
        self.disk.allocated_extents()
    }
    fn read_to_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> std::io::Result<()> {
        self.disk.read_to_guest(bufs, offset)
    }
    fn write_from_guest(&mut self, bufs: &GuestBuffers<'_>, offset: u64) -> std::io::Result<()> {
        let pace = if self.writes < PACED_WRITES {
            WRITE_PACE
        } else {
            SLOW_PACE
        };
        self.writes += 1;
        std::thread::sleep(pace);
        self.disk.write_from_guest(bufs, offset)
    }
}

#[test]
fn a_local_disk_the_guest_writes_during_the_migration_is_copied_byte_for_byte() {
    let tmp = TempDir::new().unwrap();
    let (src_disk, dst_disk) = (tmp.as_path().join("src.raw"), tmp.as_path().join("dst.raw"));
    create_image(&src_disk, STREAM_MIB).unwrap();
    // The target's own fresh disk, as a launcher prepares a new emptyDisk or overlay.
    create_image(&dst_disk, STREAM_MIB).unwrap();
    // The source's disk is paced; the target's is not, so the guest finishes there quickly.
    let stream = |path: &Path, paced: bool| {
        let guest = virtio_blk_stream(STREAM_MIB, DEPTH, Marks::ReportPort).unwrap();
        let config = VmConfig::new(1, STREAM_MEMORY_SIZE, guest.boot_source())
            .with_serial(ConsoleConfig::Sink)
            .with_debug_exit();
        let marks = Recorder::shared(0);
        let disk = RawFile::open(path, false).unwrap();
        let disk: Box<dyn BlockBackend> = if paced {
            Box::new(Paced { disk, writes: 0 })
        } else {
            Box::new(disk)
        };
        let block = Block::new(disk, "copied").with_migration(DiskMigration::Copy);
        let builder = Vm::builder(config)
            .pio_device(REPORT_PORT, 4, marks.clone())
            .virtio_device(Box::new(block));
        (builder, marks)
    };
    let (builder, marks) = stream(&src_disk, true);
    let source = builder.build().unwrap();
    source.start().unwrap();
    wait_for("the guest to start writing", || {
        marks_of(&marks).contains(&1)
    });
    let (target_builder, target_marks) = stream(&dst_disk, false);
    // Round 0 (what it wrote so far) while it writes on, then the pause: what it wrote
    // meanwhile goes in the stop-and-copy.
    let options = MigrationOptions {
        max_rounds: 1,
        ..MigrationOptions::default()
    };
    let (sent, received) = migrate(&source, target_builder, &options, &MigrationControl::new());
    let stats = sent.unwrap();
    let target = received.unwrap();
    assert_eq!(wait(&source), ExitReason::Migrated);
    println!(
        "MIGRATED virtio-blk stream, disk copied: rounds={} bytes={} disk_bytes={} total={:?} downtime={:?}",
        stats.rounds, stats.bytes_sent, stats.disk_bytes, stats.elapsed, stats.downtime
    );
    let seen = marks_of(&marks);
    assert!(
        !seen.contains(&3),
        "the stream finished before it migrated ({seen:?}): nothing was in flight"
    );
    // At the handover the target's disk is what the source's guest saw.
    let data = assert_same_file(&src_disk, &dst_disk);
    assert!(data > 0, "the guest wrote nothing");
    assert!(stats.disk_bytes > 0);
    target.start().unwrap();
    assert_stream_finished(&target, wait(&target));
    let seen = marks_of(&target_marks);
    assert!(
        seen.contains(&2) && seen.contains(&3),
        "the target went on: {seen:?}"
    );
}

#[test]
fn a_target_whose_disks_differ_refuses_and_the_source_runs_on() {
    let tmp = TempDir::new().unwrap();
    let disk = tmp.as_path().join("disk.raw");
    let other = tmp.as_path().join("other.raw");
    create_image(&disk, 4).unwrap();
    create_image(&other, 8).unwrap();
    let source = Vm::builder(dirty_config())
        .virtio_device(Box::new(
            Block::new(Box::new(RawFile::open(&disk, false).unwrap()), "a")
                .with_migration(DiskMigration::Copy),
        ))
        .build()
        .unwrap();
    source.start().unwrap();
    // What a migration would copy: nothing of a sparse disk, then what was written.
    assert_eq!(source.migration_disk_bytes(), 0);
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&[1; 4096], 1 << 20).unwrap();
    let bytes = source.migration_disk_bytes();
    assert!((4096..=1 << 20).contains(&bytes), "{bytes}");
    wait_for("the guest to count", || read_u64(&source, COUNTER_ADDR) > 0);
    let target = Vm::builder(dirty_config()).virtio_device(Box::new(
        Block::new(Box::new(RawFile::open(&other, false).unwrap()), "a")
            .with_migration(DiskMigration::Copy),
    ));
    let (sent, received) = migrate(
        &source,
        target,
        &MigrationOptions::default(),
        &MigrationControl::new(),
    );
    let e = received.err().unwrap().to_string();
    assert!(
        e.contains("4194304 bytes copied") && e.contains("8388608 bytes copied"),
        "{e}"
    );
    let sent = sent.unwrap_err().to_string();
    assert!(sent.contains("source's disks"), "{sent}");
    assert_source_counts_on(&source);
    source.stop();
}

#[test]
fn a_disk_chunk_outside_the_disk_or_for_a_shared_disk_is_refused_by_name() {
    use kubevirt_vmm::migration::wire::{self, DiskChunk, DiskData, DiskInfo, Hello, Message};
    let tmp = TempDir::new().unwrap();
    let (copied, shared) = (tmp.as_path().join("c.raw"), tmp.as_path().join("s.raw"));
    create_image(&copied, 1).unwrap();
    create_image(&shared, 1).unwrap();
    for (disk, offset, want) in [
        (0, (1 << 20) - 512, "the disk is 1048576 bytes"),
        (1, 0, "the disk is shared, not copied"),
        (2, 0, "this VM has 2 disks"),
    ] {
        let (mut source, mut b) = UnixStream::pair().unwrap();
        for s in [&source, &b] {
            s.set_read_timeout(Some(common::GUEST_TIMEOUT)).unwrap();
        }
        let open = |p: &Path| Box::new(RawFile::open(p, false).unwrap());
        let builder = Vm::builder(dirty_config())
            .virtio_device(Box::new(
                Block::new(open(&copied), "c").with_migration(DiskMigration::Copy),
            ))
            .virtio_device(Box::new(Block::new(open(&shared), "s")));
        let receiver = std::thread::spawn(move || builder.migrate_from(&mut b));
        wire::write_preamble(&mut source).unwrap();
        let info = |copy| DiskInfo {
            size: 1 << 20,
            copy,
        };
        let hello = Hello {
            vcpus: 1,
            memory_size: DIRTY_RAM,
            regions: vec![(0, DIRTY_RAM)],
            disks: vec![info(true), info(false)],
        };
        wire::write_message(&mut source, &Message::Hello(hello)).unwrap();
        assert_eq!(wire::read_message(&mut source).unwrap(), Message::Ready);
        let chunks = vec![DiskChunk {
            disk,
            offset,
            data: DiskData::Bytes(vec![1; 1024]),
        }];
        wire::write_message(&mut source, &Message::Disk { round: 0, chunks }).unwrap();
        let err = receiver.join().unwrap().unwrap_err();
        assert!(
            matches!(err, MigrationError::BadDiskChunk { .. }) && err.to_string().contains(want),
            "{err}"
        );
        match wire::read_message(&mut source).unwrap() {
            Message::Error(reason) => assert!(reason.contains(want), "{reason}"),
            m => panic!("expected the target's Error, got {m:?}"),
        }
    }
}
