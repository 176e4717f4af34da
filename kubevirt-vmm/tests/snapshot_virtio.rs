//! Snapshots of a VM whose guest is driving a virtio-pci device: a guest streaming to a
//! virtio-blk disk (requests in flight, completions polled on the used ring) is paused right
//! after it started writing, saved, and restored in a new process, where the stream finishes
//! with every request completed with status 0 — so the queues came back at the positions the
//! device had reached, neither replaying nor losing a request. The original VM, resumed after
//! the snapshot, finishes too.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{Recorder, assert_stream_finished, marks_of, wait};
use kubevirt_vmm::testguest::REPORT_PORT;
use kubevirt_vmm::testguest::blk_stream_run::create_image;
use kubevirt_vmm::testguest::virtio_blk_stream::{Marks, STREAM_MEMORY_SIZE, virtio_blk_stream};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{BusDevice, ConsoleConfig, DeviceStateError, Vm, VmBuilder, VmError};
use vmm_sys_util::tempdir::TempDir;

/// MiB the guest writes, then reads back.
const STREAM_MIB: u32 = 64;
/// Requests in flight.
const DEPTH: u32 = 4;
/// Set in the child process: the snapshot directory to restore.
const CHILD_DIR_ENV: &str = "KUBEVIRT_VMM_VIRTIO_SNAPSHOT_DIR";
/// Set in the child process: the disk image.
const CHILD_DISK_ENV: &str = "KUBEVIRT_VMM_VIRTIO_SNAPSHOT_DISK";

/// The stream VM on `disk`, with a recorder for the guest's phase marks; not yet built.
fn stream_vm(disk: &Path) -> (VmBuilder, Arc<Mutex<Recorder>>) {
    let guest = virtio_blk_stream(STREAM_MIB, DEPTH, Marks::ReportPort).unwrap();
    let config = kubevirt_vmm::VmConfig::new(1, STREAM_MEMORY_SIZE, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit();
    let marks = Recorder::shared(0);
    let block = Block::new(Box::new(RawFile::open(disk, false).unwrap()), "snap");
    let builder = Vm::builder(config)
        .pio_device(REPORT_PORT, 4, marks.clone())
        .virtio_device(Box::new(block));
    (builder, marks)
}

/// Builds and starts `builder`'s stream VM and pauses it as soon as the guest marks the start
/// of its writes (requests are then in flight).
fn paused_mid_write(builder: VmBuilder, marks: &Mutex<Recorder>) -> Vm {
    let vm = builder.build().unwrap();
    vm.start().unwrap();
    kubevirt_testsupport::eventually_within(
        common::GUEST_TIMEOUT,
        "the guest to start writing",
        || marks_of(marks).contains(&1).then_some(()),
    );
    vm.pause().unwrap();
    let seen = marks_of(marks);
    assert!(
        !seen.contains(&3),
        "the stream finished before it was paused ({seen:?}): nothing in flight was saved"
    );
    vm
}

/// The stream VM on `disk`, paused mid-write and saved to `dir`; returns it and its marks.
fn stream_paused_mid_write(disk: &Path, dir: &Path) -> (Vm, Arc<Mutex<Recorder>>) {
    let (builder, marks) = stream_vm(disk);
    let vm = paused_mid_write(builder, &marks);
    vm.snapshot(dir).unwrap();
    (vm, marks)
}

#[test]
fn a_guest_streaming_to_virtio_blk_finishes_in_a_new_process() {
    let tmp = TempDir::new().unwrap();
    let disk = tmp.as_path().join("disk.raw");
    create_image(&disk, STREAM_MIB).unwrap();
    let dir = tmp.as_path().join("snap");
    let (vm, _) = stream_paused_mid_write(&disk, &dir);
    vm.stop();
    drop(vm);

    let stdout = common::run_child_test(
        "restored_stream_child",
        &[
            (CHILD_DIR_ENV, dir.as_os_str()),
            (CHILD_DISK_ENV, disk.as_os_str()),
        ],
    );
    assert!(
        stdout.contains("RESTORED STREAM FINISHED"),
        "the child did not run the restored guest:\n{stdout}"
    );
}

/// The child half of the test above.
#[test]
#[ignore = "run in a child process by a_guest_streaming_to_virtio_blk_finishes_in_a_new_process"]
fn restored_stream_child() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by the parent test only");
    let disk = std::env::var(CHILD_DISK_ENV).unwrap();
    let (builder, marks) = stream_vm(disk.as_ref());
    let vm = builder.restore(dir.as_ref()).unwrap();
    vm.start().unwrap();
    let reason = wait(&vm);
    assert_stream_finished(&vm, reason);
    let seen = marks_of(&marks);
    assert!(
        seen.contains(&3) && !seen.contains(&1),
        "the restored guest continued (marks after the restore: {seen:?})"
    );
    println!("RESTORED STREAM FINISHED marks={seen:?}");
}

#[test]
fn the_original_vm_finishes_its_stream_after_a_snapshot() {
    let tmp = TempDir::new().unwrap();
    let disk = tmp.as_path().join("disk.raw");
    create_image(&disk, STREAM_MIB).unwrap();
    let dir = tmp.as_path().join("snap");
    let (vm, marks) = stream_paused_mid_write(&disk, &dir);
    vm.resume().unwrap();
    let reason = wait(&vm);
    assert_stream_finished(&vm, reason);
    assert!(marks_of(&marks).contains(&3));
}

/// A bus device whose state this VMM cannot save.
struct Unsaveable;

impl BusDevice for Unsaveable {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}
    fn snapshot_name(&self) -> &'static str {
        "unsaveable"
    }
    fn save_state(&mut self) -> Result<Option<Vec<u8>>, DeviceStateError> {
        Err(DeviceStateError::Unsupported(
            "the test device keeps its state to itself",
        ))
    }
}

#[test]
fn a_device_that_cannot_save_its_state_fails_the_snapshot_and_the_virtio_disk_goes_on() {
    let tmp = TempDir::new().unwrap();
    let disk = tmp.as_path().join("disk.raw");
    create_image(&disk, STREAM_MIB).unwrap();
    let dir = tmp.as_path().join("snap");
    let (builder, marks) = stream_vm(&disk);
    let vm = paused_mid_write(
        builder.pio_device(0xe000, 1, Arc::new(Mutex::new(Unsaveable))),
        &marks,
    );
    let err = vm.snapshot(&dir).unwrap_err();
    assert!(matches!(err, VmError::Snapshot(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("unsaveable") && text.contains("cannot be saved yet"),
        "{text}"
    );
    assert!(!dir.join(kubevirt_vmm::snapshot::STATE_FILE).exists());
    // The virtio worker paused for the failed cut runs again: the stream completes.
    vm.resume().unwrap();
    let reason = wait(&vm);
    assert_stream_finished(&vm, reason);
}
