//! qcow2 writes checked by QEMU: after our writes (allocating clusters and L2 tables, growing
//! the refcount table, copy-on-write from a backing file or a compressed cluster, zeroing and
//! discarding) `qemu-img check` finds no errors and no leaks, and `qemu-img convert -O raw`
//! gives exactly the bytes we meant.

mod qcow2_common;

use std::path::Path;

use kubevirt_vmm::virtio::block::BlockBackend;
use qcow2_common::*;

/// Applies `writes` to a qcow2 disk and to a model, flushes, closes, and checks the image
/// with QEMU against the model.
fn write_and_check(path: &Path, backing: &[&Path], model: &mut [u8], writes: &[(u64, Vec<u8>)]) {
    let mut disk = open(path, false, backing);
    for (at, data) in writes {
        disk.write_at(data, *at).unwrap();
        model[*at as usize..*at as usize + data.len()].copy_from_slice(data);
    }
    // Our own reads see the writes before and after the flush.
    assert!(our_contents(disk.as_mut()) == model, "read before flush");
    disk.flush().unwrap();
    assert!(our_contents(disk.as_mut()) == model, "read after flush");
    drop(disk);
    check_clean(path);
    assert!(
        qemu_contents(path) == model,
        "{}: QEMU reads other bytes",
        path.display()
    );
    let mut again = open(path, true, backing);
    assert!(our_contents(again.as_mut()) == model, "reopened");
}

#[test]
fn writes_allocate_clusters_and_l2_tables_that_qemu_accepts() {
    let (_d, dir) = scratch();
    for (name, opts) in [
        ("v2.qcow2", "compat=0.10"),
        ("v3.qcow2", "compat=1.1"),
        ("v3-4k.qcow2", "compat=1.1,cluster_size=4096"),
        (
            "v3-rc8.qcow2",
            "compat=1.1,cluster_size=4096,refcount_bits=8",
        ),
        (
            "v3-rc64.qcow2",
            "compat=1.1,cluster_size=4096,refcount_bits=64",
        ),
        ("v3-prealloc.qcow2", "compat=1.1,preallocation=metadata"),
        ("v3-lazy.qcow2", "compat=1.1,lazy_refcounts=on"),
    ] {
        let p = dir.join(name);
        create(&p, opts, "64M");
        qemu_io(&p, &["write -P 0x5a 0 64k"]);
        let mut model = vec![0u8; 64 << 20];
        model[..64 << 10].fill(0x5a);
        let writes = vec![
            (512, pattern(1000, 1)),             // in place, inside qemu-io's cluster
            (100 << 10, pattern(4096, 2)),       // partial cluster: zeroes around it
            ((1 << 20) - 700, pattern(5000, 3)), // crosses clusters
            (40 << 20, pattern(200 << 10, 4)),   // far away: a new L2 table
            ((64 << 20) - 512, pattern(512, 5)), // the last sector
        ];
        write_and_check(&p, &[], &mut model, &writes);
    }
}

#[test]
fn many_small_clusters_grow_the_refcount_table() {
    let (_d, dir) = scratch();
    let p = dir.join("small.qcow2");
    // 512-byte clusters, 16-bit refcounts: a block counts 256 clusters and a one-cluster
    // table 64 blocks, so 16 MiB of data needs new blocks and a larger, moved table.
    create(&p, "compat=1.1,cluster_size=512", "32M");
    let before = run("qemu-img", &["info", "--output=json", p.to_str().unwrap()]);
    let mut model = vec![0u8; 32 << 20];
    let writes: Vec<_> = (0..16u64)
        .map(|i| (i * (2 << 20), pattern(1 << 20, i as u8)))
        .collect();
    write_and_check(&p, &[], &mut model, &writes);
    let table = |path: &Path| {
        let mut b = [0u8; 12];
        std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(path).unwrap(), &mut b, 48)
            .unwrap();
        (
            u64::from_be_bytes(b[..8].try_into().unwrap()),
            u32::from_be_bytes(b[8..].try_into().unwrap()),
        )
    };
    let (_, clusters) = table(&p);
    assert!(
        clusters > 1,
        "the refcount table grew ({clusters} clusters); was {before}"
    );
}

#[test]
fn partial_writes_over_a_backing_file_copy_the_rest_of_the_cluster() {
    let (_d, dir) = scratch();
    let base = dir.join("base.raw");
    let base_data = pattern(3 << 20, 7);
    std::fs::write(&base, &base_data).unwrap();
    let top = dir.join("top.qcow2");
    create_over(&top, "", Some(("base.raw", "raw")), "4M");
    let mut model = base_data.clone();
    model.resize(4 << 20, 0);
    let writes = vec![
        (1000, pattern(100, 1)),
        ((3 << 20) - 10, pattern(4096, 2)), // straddles the base's end
        ((4 << 20) - 4096, pattern(4096, 3)),
    ];
    write_and_check(&top, &[&base], &mut model, &writes);
    assert!(
        std::fs::read(&base).unwrap() == base_data,
        "the backing file is never written"
    );
}

#[test]
fn overwriting_compressed_clusters_copies_and_frees_them() {
    let (_d, dir) = scratch();
    let raw = dir.join("plain.img");
    let mut model = pattern(2 << 20, 11);
    std::fs::write(&raw, &model).unwrap();
    let c = dir.join("c.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            c.to_str().unwrap(),
        ],
    );
    let writes = vec![(70_000, pattern(300, 1)), (1 << 20, pattern(64 << 10, 2))];
    write_and_check(&c, &[], &mut model, &writes);
}

#[test]
fn write_zeroes_and_discard_read_as_zeroes_in_v2_and_v3() {
    let (_d, dir) = scratch();
    for opts in ["compat=0.10", "compat=1.1"] {
        let base = dir.join("base.raw");
        std::fs::write(&base, vec![0xeeu8; 2 << 20]).unwrap();
        let p = dir.join("z.qcow2");
        create_over(&p, opts, Some(("base.raw", "raw")), "2M");
        qemu_io(&p, &["write -P 0x5a 0 256k"]);
        let mut model = vec![0xeeu8; 2 << 20];
        model[..256 << 10].fill(0x5a);
        let mut disk = open(&p, false, &[&base]);
        for (at, len, discard) in [
            (1000u64, 3000u64, false),    // partial cluster
            (64 << 10, 128 << 10, false), // whole allocated clusters
            (1 << 20, 192 << 10, true),   // unallocated: the backing's bytes must not show
            (200 << 10, 100 << 10, true),
        ] {
            if discard {
                disk.discard(at, len).unwrap();
            } else {
                disk.write_zeroes(at, len).unwrap();
            }
            model[at as usize..(at + len) as usize].fill(0);
        }
        assert!(our_contents(disk.as_mut()) == model, "{opts}");
        disk.flush().unwrap();
        drop(disk);
        check_clean(&p);
        assert!(qemu_contents(&p) == model, "{opts}: QEMU reads other bytes");
        std::fs::remove_file(&p).unwrap();
    }
}

#[test]
fn an_image_closed_without_flush_is_still_consistent_and_complete() {
    let (_d, dir) = scratch();
    let p = dir.join("drop.qcow2");
    create(&p, "", "8M");
    let mut disk: Box<dyn BlockBackend> = open(&p, false, &[]);
    disk.write_at(&pattern(300 << 10, 1), 5 << 20).unwrap();
    drop(disk); // closing writes the metadata
    check_clean(&p);
    let mut model = vec![0u8; 8 << 20];
    model[5 << 20..(5 << 20) + (300 << 10)].copy_from_slice(&pattern(300 << 10, 1));
    assert!(qemu_contents(&p) == model);
}

#[test]
fn writethrough_makes_every_write_and_its_metadata_durable_at_once() {
    use kubevirt_vmm::virtio::block::{CacheMode, open_image};
    let (_d, dir) = scratch();
    let p = dir.join("wt.qcow2");
    create(&p, "", "4M");
    let mut disk = open_image(&p, false, CacheMode::Writethrough, &[]).unwrap();
    assert!(
        !disk.has_volatile_cache(),
        "no flush is offered, so none may be needed"
    );
    disk.write_at(&pattern(10_000, 4), 3 << 20).unwrap();
    // Without a flush or a close, the file already holds the complete, clean image.
    let copy = dir.join("copy.qcow2");
    std::fs::copy(&p, &copy).unwrap();
    check_clean(&copy);
    let mut model = vec![0u8; 4 << 20];
    model[3 << 20..(3 << 20) + 10_000].copy_from_slice(&pattern(10_000, 4));
    assert!(qemu_contents(&copy) == model);
    drop(disk);
}

/// A crash after any step of the flush leaves an image `qemu-img check` finds no error in
/// (leaks allowed): the writes below need every step (new data clusters and L2 tables, new
/// refcount blocks, a grown and moved refcount table, a freed compressed cluster).
#[test]
fn a_crash_after_any_flush_step_leaves_no_error_only_leaks() {
    use kubevirt_vmm::virtio::block::CacheMode;
    use kubevirt_vmm::virtio::block::qcow2::open_qcow2;
    let (_d, dir) = scratch();
    let raw = dir.join("plain.img");
    std::fs::write(&raw, vec![0x42u8; 64 << 10]).unwrap();
    let template = dir.join("template.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=512",
            raw.to_str().unwrap(),
            template.to_str().unwrap(),
        ],
    );
    run(
        "qemu-img",
        &["resize", "-q", template.to_str().unwrap(), "16M"],
    );
    for steps in 0..=6 {
        let p = dir.join("crash.qcow2");
        std::fs::copy(&template, &p).unwrap();
        let mut disk = open_qcow2(&p, false, CacheMode::Writeback, &[]).unwrap();
        disk.write_at(&pattern(100, 1), 1000).unwrap(); // replaces a compressed cluster
        disk.write_at(&pattern(9 << 20, 2), 4 << 20).unwrap(); // grows the refcount table
        disk.crash_after(steps).unwrap();
        let copy = dir.join(format!("after-{steps}.qcow2"));
        std::fs::copy(&p, &copy).unwrap();
        drop(disk);
        let out = std::process::Command::new("qemu-img")
            .args(["check", copy.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)) && !text.contains("ERROR"),
            "crash after {steps} flush steps:\n{text}"
        );
        std::fs::remove_file(&copy).unwrap();
        check_clean(&p); // and the completed flush (at drop) is clean
    }
}
