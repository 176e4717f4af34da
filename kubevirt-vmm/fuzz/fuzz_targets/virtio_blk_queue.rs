//! libFuzzer target over the virtio-blk request queue: the input becomes the descriptor
//! table, the available ring and the request buffers of a 16-entry queue in 256 KiB of guest
//! memory (layout in `blk_common.rs`); processing must not panic, hang or write the disk out
//! of bounds.
//!
//! Run: `scripts/fuzz.sh` (CI: 30 s from the committed corpus), or by hand
//! `cd kubevirt-vmm/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run virtio_blk_queue -- -max_total_time=60`

#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;

#[path = "blk_common.rs"]
mod blk_common;
mod guest;
use blk_common::{DISK_LEN, Disk, SharedDisk, guest_memory, process};

fuzz_target!(|data: &[u8]| {
    let Some((mem, read_only)) = guest_memory(data) else {
        return;
    };
    let disk: SharedDisk = Arc::new(Mutex::new(Box::new(Disk(vec![0xa5; DISK_LEN], read_only))));
    process(mem, disk.clone());
    assert_eq!(disk.lock().unwrap().size(), DISK_LEN as u64);
});
