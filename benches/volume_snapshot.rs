//! A local volume's snapshot (issue 17) against `cp` on the same file in the same run: the node's
//! snapshotter (`storage::snapshots::take` of a Block volume's image: `FICLONE` where the file
//! system shares extents, else the `SEEK_DATA`/`SEEK_HOLE` sparse copy) against
//! `cp --sparse=always` and `cp --reflink=auto --sparse=always` (GNU coreutils) each followed by
//! `sync <copy>` (ours fsyncs what it copied before the snapshot is ready), each copying a
//! sparse image of `<virtual MiB>` holding `<data MiB>` of data in 4 MiB extents spread over it.
//! The page cache is warm for both (the image was just written and is read by every run).
//!
//! Run: `cargo bench --bench volume_snapshot` (optionally `-- <virtual MiB> <data MiB> <runs>`;
//! default a 1024 MiB image holding 256 MiB of data, 5 runs each, medians compared). Files live
//! in a temporary directory on the file system of `$TMPDIR`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kubevirt_controller::storage::claim::VolumeMode;
use kubevirt_controller::storage::disk::{Volume, image};
use kubevirt_controller::storage::snapshots;

const EXTENT: u64 = 4 << 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn cp(args: &[&str], src: &Path, dst: &Path) -> Duration {
    let _ = std::fs::remove_file(dst);
    let start = Instant::now();
    // The copy made durable, as a snapshot is before it is ready (ours fsyncs each file).
    let ok = Command::new("cp")
        .args(args)
        .arg(src)
        .arg(dst)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("sync")
            .arg(dst)
            .status()
            .is_ok_and(|s| s.success());
    let took = start.elapsed();
    assert!(ok, "cp {args:?} failed");
    took
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let virtual_mib = args.first().copied().unwrap_or(1024);
    let data_mib = args.get(1).copied().unwrap_or(256).min(virtual_mib);
    let runs = args.get(2).copied().unwrap_or(5).max(1) as usize;
    let dir = kubevirt_testsupport::tempdir("bench-snapshot");
    let root = dir.path().to_path_buf();

    // The volume: a sparse image with `data_mib` of data in extents spread evenly.
    let name = "pvc-bench";
    let src = image(&root, name);
    let f = File::create(&src).unwrap();
    f.set_len(virtual_mib << 20).unwrap();
    let extents = (data_mib << 20) / EXTENT;
    let stride = (virtual_mib << 20).checked_div(extents).unwrap_or(0);
    let mut block = vec![0u8; EXTENT as usize];
    for i in 0..extents {
        for (j, b) in block.iter_mut().enumerate() {
            *b = (i as usize * 31 + j * 7 % 251) as u8 | 1;
        }
        f.write_all_at(&block, i * stride).unwrap();
    }
    f.sync_all().unwrap();
    let volume = Volume {
        name: name.into(),
        mode: VolumeMode::Block,
        bytes: virtual_mib << 20,
    };

    let (mut ours, mut sparse, mut reflink) = (Vec::new(), Vec::new(), Vec::new());
    let mut method = None;
    let peer = root.join("peer.img");
    for run in 0..runs {
        let handle = format!("snap-{run}");
        let start = Instant::now();
        let (_, m) = snapshots::take(&root, &volume, &handle, 0).unwrap();
        ours.push(start.elapsed());
        method = m;
        snapshots::remove(&root, &handle).unwrap();
        sparse.push(cp(&["--sparse=always"], &src, &peer));
        reflink.push(cp(&["--reflink=auto", "--sparse=always"], &src, &peer));
    }
    let (o, s, r) = (median(ours), median(sparse), median(reflink));
    println!(
        "volume snapshot of a {virtual_mib} MiB image holding {data_mib} MiB ({runs} runs, medians; ours by {method:?}):"
    );
    println!(
        "  snapshots::take                      {:>8.1} ms",
        o.as_secs_f64() * 1e3
    );
    println!(
        "  cp --sparse=always                   {:>8.1} ms  (ours {:.2}x its time)",
        s.as_secs_f64() * 1e3,
        o.as_secs_f64() / s.as_secs_f64()
    );
    println!(
        "  cp --reflink=auto --sparse=always    {:>8.1} ms  (ours {:.2}x its time)",
        r.as_secs_f64() * 1e3,
        o.as_secs_f64() / r.as_secs_f64()
    );
}
