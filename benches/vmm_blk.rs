//! virtio-blk sequential 1 MiB writes and reads from a CPL 3 guest driver, against host
//! `pwrite`/`pread` of the same sizes on the same file in the same run.
//!
//! Run: `cargo bench --bench vmm_blk` (optionally `-- <MiB per run> <runs>`). The guest
//! (`testguest::virtio_blk_stream`) keeps 1, 2 or 4 requests of 1 MiB in flight, notifies
//! through the ioeventfd and polls the used ring; phases are timestamped by a port device, so
//! VM creation and device discovery are not timed (`testguest::blk_stream_run`). Writes
//! include the final flush (fdatasync) on both sides. Both sides hit the page cache for reads
//! (the data was just written).

use kubevirt_vmm::testguest::blk_stream_run::{create_image, median, run_guest, run_host};

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(64);
    let runs = args.get(1).copied().unwrap_or(5);
    let dir = kubevirt_testsupport::tempdir("vmm-blk-bench");
    let path = dir.join("disk.img");
    create_image(&path, mib).expect("create the disk image");

    // Depth 1 is the worst case (every request waits for the notify round trip); depth 2 is what
    // any real driver (Linux blk-mq) keeps in flight for a sequential stream; depth 4 shows
    // whether more helps.
    let depths = [1u32, 2, 4];
    let mut guest = vec![(vec![], vec![]); depths.len()];
    let (mut hw, mut hr) = (vec![], vec![]);
    for _ in 0..runs {
        for (i, &depth) in depths.iter().enumerate() {
            let (w, r) = run_guest(&path, mib, depth)
                .expect("guest run")
                .mib_per_s(mib);
            guest[i].0.push(w);
            guest[i].1.push(r);
        }
        let (w, r) = run_host(&path, mib).expect("host run").mib_per_s(mib);
        hw.push(w);
        hr.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (hw, hr) = (median(hw), median(hr));
    println!("virtio-blk sequential 1 MiB, {mib} MiB per run, median of {runs} runs");
    for (&depth, (gw, gr)) in depths.iter().zip(guest) {
        let (gw, gr) = (median(gw), median(gr));
        println!(
            "depth {depth} write+flush: guest {gw:8.1} MiB/s  host pwrite+fdatasync {hw:8.1} MiB/s  ratio {:.2}x",
            gw / hw
        );
        println!(
            "depth {depth} read:        guest {gr:8.1} MiB/s  host pread            {hr:8.1} MiB/s  ratio {:.2}x",
            gr / hr
        );
    }
}
