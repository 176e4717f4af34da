//! A disk's error policy on real vCPUs: the virtio-blk stream guest writes a disk whose image
//! lives on a tmpfs too small for it. With `stop` (KubeVirt's default) the VM pauses at the
//! first write that finds no space, naming the disk and the error, and the guest sees no error;
//! once the file system is grown the resumed guest finishes its stream with 0 errors. With
//! `report` the same write fails to the guest, which stops with a request error.
//!
//! Needs root (it mounts a tmpfs).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Recorder, assert_stream_finished, marks_of, wait};
use kubevirt_vmm::testguest::REPORT_PORT;
use kubevirt_vmm::testguest::blk_stream_run::create_image;
use kubevirt_vmm::testguest::virtio_blk_stream::{
    EXIT_REQUEST_FAILED, Marks, STREAM_ERRORS, STREAM_MEMORY_SIZE, virtio_blk_stream,
};
use kubevirt_vmm::virtio::block::{Block, ErrorPolicy, RawFile};
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm, VmConfig, VmState};
use vm_memory::{Bytes, GuestAddress};

/// The stream's size, and the tmpfs's at first: the guest runs out of space a quarter in.
const STREAM_MIB: u32 = 32;
const SMALL: &str = "size=8m";
const LARGE: &str = "size=64m";

/// A tmpfs mounted at a new directory, unmounted on drop.
struct Tmpfs(kubevirt_testsupport::TestDir);

impl Tmpfs {
    fn mount(options: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = kubevirt_testsupport::tempdir("disk-errors");
        mount(dir.path(), options, false);
        Some(Tmpfs(dir))
    }

    fn grow(&self, options: &str) {
        mount(self.0.path(), options, true);
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

fn mount(at: &Path, options: &str, remount: bool) {
    let options = if remount {
        format!("remount,{options}")
    } else {
        options.to_string()
    };
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
        .arg(at)
        .output()
        .expect("running mount");
    assert!(
        out.status.success(),
        "mount {options}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn stream_vm(
    image: &Path,
    policy: ErrorPolicy,
) -> (Vm, std::sync::Arc<std::sync::Mutex<Recorder>>) {
    let guest = virtio_blk_stream(STREAM_MIB, 4, Marks::ReportPort).unwrap();
    let config = VmConfig::new(1, STREAM_MEMORY_SIZE, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit();
    let marks = Recorder::shared(0);
    let block = Block::new(Box::new(RawFile::open(image, false).unwrap()), "scratch")
        .with_error_policy(policy);
    let vm = Vm::builder(config)
        .pio_device(REPORT_PORT, 4, marks.clone())
        .virtio_device(Box::new(block))
        .build()
        .unwrap();
    (vm, marks)
}

#[test]
fn a_full_disk_pauses_the_vm_and_the_guest_finishes_once_there_is_space() {
    let Some(fs) = Tmpfs::mount(SMALL) else {
        return;
    };
    let image = fs.path().join("disk.img");
    create_image(&image, STREAM_MIB).unwrap();
    let (vm, marks) = stream_vm(&image, ErrorPolicy::Stop);
    vm.start().unwrap();
    // The error is recorded as the pause begins; the vCPUs stop a moment later.
    let error = kubevirt_testsupport::eventually_within(
        common::GUEST_TIMEOUT,
        "the VM paused for its disk",
        || vm.io_error().filter(|_| vm.state() == VmState::Paused),
    );
    assert_eq!(error.disk, "scratch");
    assert!(error.error.contains("No space left"), "{error}");
    let errors: u32 = vm.memory().read_obj(GuestAddress(STREAM_ERRORS)).unwrap();
    assert_eq!(errors, 0, "the guest saw no error");
    assert!(
        !marks_of(&marks).contains(&2),
        "it had not finished writing"
    );
    // Still no space: a resume runs the request again and pauses again.
    vm.resume().unwrap();
    kubevirt_testsupport::eventually_within(common::GUEST_TIMEOUT, "the VM paused again", || {
        (vm.state() == VmState::Paused && vm.io_error().is_some()).then_some(())
    });

    fs.grow(LARGE);
    vm.resume().unwrap();
    assert_eq!(vm.io_error(), None, "the error goes with the resume");
    assert_stream_finished(&vm, wait(&vm));
    assert!(marks_of(&marks).contains(&3), "{:?}", marks_of(&marks));
}

#[test]
fn with_the_report_policy_the_guest_gets_the_error() {
    let Some(fs) = Tmpfs::mount(SMALL) else {
        return;
    };
    let image = fs.path().join("disk.img");
    create_image(&image, STREAM_MIB).unwrap();
    let (vm, _marks) = stream_vm(&image, ErrorPolicy::Report);
    vm.start().unwrap();
    assert_eq!(
        wait(&vm),
        ExitReason::DebugExit {
            code: EXIT_REQUEST_FAILED
        }
    );
    assert_eq!(vm.io_error(), None);
}
