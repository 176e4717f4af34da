//! Differential libFuzzer target for virtio-blk's direct I/O path: every input (the
//! `virtio_blk_queue` format, see `blk_common.rs`, so that corpus seeds this one) is processed
//! twice from identical guest memory, once against an in-memory disk through the trait's
//! bounce-buffer defaults and once against a `RawFile`, whose `read_to_guest` and
//! `write_from_guest` hand the guest's buffers to `preadv`/`pwritev` as iovecs built with
//! unsafe code. Afterwards guest memory (data read, status bytes, used ring) and the disk
//! contents must be identical, byte for byte.
//!
//! The file lives on /dev/shm when it exists (tmpfs: flushes cost nothing) and is unlinked at
//! once; `RawFile` opens it through /proc/self/fd.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-vmm/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_blk_vectored -- -max_total_time=60`

#![no_main]

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use kubevirt_vmm::virtio::block::RawFile;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use kubevirt_vmm::GuestMemoryMmap;

#[path = "blk_common.rs"]
mod blk_common;
mod guest;
use blk_common::{DISK_LEN, Disk, SharedDisk, guest_memory, process};
use guest::MEM;

/// The scratch image (unlinked) and the /proc path that reopens it.
fn scratch() -> &'static (File, PathBuf) {
    static FILE: OnceLock<(File, PathBuf)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("virtio-blk-vectored-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let proc = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        (file, proc)
    })
}

/// Copies guest memory into `buf` (reused across inputs: fresh 256 KiB buffers would cost a
/// page fault per 4 KiB on every input).
fn memory_bytes(mem: &GuestMemoryMmap, buf: &mut Vec<u8>) {
    buf.resize(MEM, 0);
    mem.read_slice(buf, GuestAddress(0)).unwrap();
}

/// Where `a` and `b` first differ. Slice equality (one memcmp) first: a byte loop here would
/// be instrumented for coverage and cost milliseconds per input.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

fuzz_target!(|data: &[u8]| {
    let Some((bounce_mem, read_only)) = guest_memory(data) else {
        return;
    };
    let (direct_mem, _) = guest_memory(data).unwrap();

    let bounce: SharedDisk = Arc::new(Mutex::new(Box::new(Disk(vec![0xa5; DISK_LEN], read_only))));
    process(bounce_mem.clone(), bounce.clone());

    let (file, path) = scratch();
    file.set_len(0).unwrap();
    file.write_all_at(&[0xa5; DISK_LEN], 0).unwrap();
    let direct: SharedDisk = Arc::new(Mutex::new(Box::new(
        RawFile::open(path, read_only).unwrap(),
    )));
    process(direct_mem.clone(), direct);

    thread_local! {
        static BUFS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    BUFS.with_borrow_mut(|(a, b)| {
        memory_bytes(&bounce_mem, a);
        memory_bytes(&direct_mem, b);
        if let Some(at) = first_difference(a, b) {
            panic!(
                "guest memory differs at {at:#x}: bounce {:#04x}, preadv/pwritev {:#04x}",
                a[at], b[at]
            );
        }
    });
    let mut disk_a = vec![0u8; DISK_LEN];
    bounce.lock().unwrap().read_at(&mut disk_a, 0).unwrap();
    let mut disk_b = vec![0u8; DISK_LEN];
    file.read_exact_at(&mut disk_b, 0).unwrap();
    if let Some(at) = first_difference(&disk_a, &disk_b) {
        panic!(
            "disk differs at {at:#x}: bounce {:#04x}, pwritev {:#04x}",
            disk_a[at], disk_b[at]
        );
    }
    assert_eq!(file.metadata().unwrap().len(), DISK_LEN as u64);
});
