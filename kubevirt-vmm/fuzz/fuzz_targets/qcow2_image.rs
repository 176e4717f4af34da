//! libFuzzer target for the qcow2 header and table parsers and the lookups behind them: the
//! input is a whole image file. `open_image` detects the format, parses and checks the header
//! and extensions, the L1 table and (writable) the refcount table; then the first clusters and
//! a few input-chosen offsets are read, one write goes through allocation and the flush, and
//! the image is read again. Any outcome but a panic, a hang or an out-of-bounds access is
//! fine: a corrupt image must fail with an error.
//!
//! The file lives on /dev/shm when it exists (tmpfs: flushes cost nothing) and is unlinked at
//! once; it is opened through /proc/self/fd.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-vmm/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run qcow2_image -- -max_total_time=60`

#![no_main]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use kubevirt_vmm::virtio::block::{BlockBackend, CacheMode, open_image};
use libfuzzer_sys::fuzz_target;

/// Largest input used (bigger inputs are cut): a few 512-byte clusters of tables and data.
const MAX_FILE: usize = 256 << 10;

/// The scratch image (unlinked) and the /proc path that reopens it.
fn scratch() -> &'static (File, PathBuf) {
    static FILE: OnceLock<(File, PathBuf)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("qcow2-image-{}", std::process::id()));
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

/// Reads the first 64 KiB and three offsets taken from the input's last bytes.
fn read_some(disk: &mut dyn BlockBackend, data: &[u8]) {
    let size = disk.size();
    let mut buf = vec![0u8; 4096];
    let mut at = 0;
    while at < size.min(64 << 10) {
        let n = (size - at).min(4096) as usize;
        let _ = disk.read_at(&mut buf[..n], at);
        at += n as u64;
    }
    for chunk in data.rchunks(8).take(3) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        let off = (u64::from_le_bytes(b) % size) & !511;
        let n = (size - off).min(4096) as usize;
        let _ = disk.read_at(&mut buf[..n], off);
    }
}

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_FILE)];
    let (file, path) = scratch();
    file.set_len(0).unwrap();
    file.write_all_at(data, 0).unwrap();
    if let Ok(mut disk) = open_image(path, true, CacheMode::Writeback, &[]) {
        read_some(disk.as_mut(), data);
    }
    if let Ok(mut disk) = open_image(path, false, CacheMode::Writeback, &[]) {
        let size = disk.size();
        let off = (u64::from(data.get(60).copied().unwrap_or(0)) << 12) % size;
        let n = (size - off).min(5000) as usize;
        let _ = disk.write_at(&vec![0x5a; n], off);
        let _ = disk.write_zeroes(0, size.min(4096));
        let _ = disk.flush();
        read_some(disk.as_mut(), data);
    }
});
