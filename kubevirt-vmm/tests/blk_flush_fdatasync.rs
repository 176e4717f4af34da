//! A guest's flush reaches the disk: while the CPL 3 driver writes and flushes a virtio-blk
//! disk on real vCPUs, `strace` watches this process, and the image file gets an `fdatasync`
//! (what makes the flushed data durable if the VMM is killed right after). Its own test binary,
//! so tracing does not slow the other tests.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::wait;
use kubevirt_vmm::testguest::virtio_blk::{self, RES_REQ_STATUS, RESULTS};
use kubevirt_vmm::virtio::block::{Block, CacheMode, RawFile};
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
use vm_memory::{Bytes, GuestAddress};

fn traced_by_someone() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
}

/// Runs the driver against an image opened with `cache`; returns what strace saw.
fn flush_under_strace(cache: CacheMode, dir: &std::path::Path) -> String {
    let image = dir.join(format!("{cache:?}.img"));
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let log = dir.join(format!("{cache:?}.strace"));
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=fdatasync,fsync", "-o"])
        .arg(&log)
        .arg("-p")
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace is installed (scripts/setup.sh)");
    let start = Instant::now();
    while !traced_by_someone() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "strace did not attach"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let disk = Block::new(
        Box::new(RawFile::open_with_cache(&image, false, cache).unwrap()),
        "flush",
    );
    let guest = virtio_blk::virtio_blk_check().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(disk))
        .build()
        .unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    // write, flush, read, GET_ID all completed with status 0.
    for i in 0..4 {
        let s: u32 = vm
            .memory()
            .read_obj(GuestAddress(RESULTS + RES_REQ_STATUS + 4 * i))
            .unwrap();
        assert_eq!(s, 0, "request {i}");
    }
    drop(vm);
    // SAFETY: kill(2) on the strace child this test spawned and has not reaped.
    unsafe {
        libc::kill(strace.id() as libc::pid_t, libc::SIGINT);
    }
    strace.wait().unwrap();
    std::fs::read_to_string(&log).unwrap_or_default()
}

#[test]
fn a_guest_flush_is_an_fdatasync_of_the_image() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let seen = flush_under_strace(CacheMode::None, dir.as_path());
    let synced = seen
        .lines()
        .any(|l| l.contains("fdatasync(") && l.contains("None.img>) = 0"));
    assert!(
        synced,
        "no fdatasync of the image for the guest's flush; strace saw:\n{seen}"
    );
}
