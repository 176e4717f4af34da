//! qcow2 reads against QEMU's own: images made by `qemu-img create` (v2 and v3) and written
//! by `qemu-io`, compressed by `qemu-img convert -c`, over a raw backing file; our reads of
//! the whole disk must equal `qemu-img convert -O raw`, and `qemu-io`'s pattern reads agree.

mod qcow2_common;

use kubevirt_vmm::virtio::block::{ImageFormat, detect_format};
use qcow2_common::*;

#[test]
fn v2_and_v3_images_written_by_qemu_io_read_as_qemu_reads_them() {
    let (_d, dir) = scratch();
    for (name, opts) in [
        ("v2.qcow2", "compat=0.10"),
        ("v3.qcow2", "compat=1.1"),
        ("v3-4k.qcow2", "compat=1.1,cluster_size=4096"),
        (
            "v3-512.qcow2",
            "compat=1.1,cluster_size=512,refcount_bits=64",
        ),
    ] {
        let p = dir.join(name);
        create(&p, opts, "4M");
        let mut cmds = vec![
            "write -P 0x5a 0 64k",
            "write -P 0xa5 1000k 6k",
            "write -P 0x11 3M 512",
        ];
        if opts.contains("1.1") {
            cmds.push("write -z 16k 16k"); // zero clusters (or zeroed data) inside the 0x5a run
            cmds.push("write -z 2M 1M");
        }
        qemu_io(&p, &cmds);
        qemu_io(&p, &["read -P 0x5a 0 16k", "read -P 0xa5 1000k 6k"]);
        assert_eq!(detect_format(&p).unwrap(), ImageFormat::Qcow2);
        // QEMU's byte-range locks see our whole-file lock as a conflict: QEMU reads first.
        let theirs = qemu_contents(&p);
        let mut disk = open(&p, true, &[]);
        assert_eq!(disk.size(), 4 << 20);
        let ours = our_contents(disk.as_mut());
        assert_eq!(ours[..16 << 10], [0x5a; 16 << 10], "{name}");
        assert!(ours == theirs, "{name}: our read differs from QEMU's");
    }
}

#[test]
fn compressed_clusters_inflate_to_the_original() {
    let (_d, dir) = scratch();
    let raw = dir.join("plain.img");
    let mut data = vec![0u8; 3 << 20];
    data[..1 << 20].copy_from_slice(&pattern(1 << 20, 3));
    data[(2 << 20) + 100..(2 << 20) + 5000].fill(0x77);
    std::fs::write(&raw, &data).unwrap();
    for opts in ["compat=0.10", "compat=1.1", "cluster_size=4096"] {
        let c = dir.join("c.qcow2");
        run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                opts,
                raw.to_str().unwrap(),
                c.to_str().unwrap(),
            ],
        );
        let check = check_clean(&c);
        assert!(
            !check.contains(" 0.00% compressed"),
            "no compressed clusters made:\n{check}"
        );
        let mut disk = open(&c, true, &[]);
        assert!(
            our_contents(disk.as_mut()) == data,
            "{opts}: compressed read differs"
        );
        drop(disk);
        std::fs::remove_file(&c).unwrap();
    }
}

#[test]
fn unallocated_clusters_read_the_caller_given_backing_file() {
    let (_d, dir) = scratch();
    let base = dir.join("base.raw");
    // The base is shorter than the overlay: past its end the overlay reads zeroes.
    std::fs::write(&base, pattern(3 << 20, 9)).unwrap();
    let top = dir.join("top.qcow2");
    create_over(&top, "", Some(("base.raw", "raw")), "4M");
    qemu_io(&top, &["write -P 0x5a 64k 4k", "write -z 1M 64k"]);
    let theirs = qemu_contents(&top);
    let mut disk = open(&top, true, &[&base]);
    let ours = our_contents(disk.as_mut());
    assert!(ours == theirs, "our read differs from QEMU's");
    assert_eq!(
        ours[..4096],
        pattern(3 << 20, 9)[..4096],
        "unallocated: the base's bytes"
    );
    assert_eq!(ours[64 << 10..68 << 10], [0x5a; 4096]);
    assert!(ours[3 << 20..].iter().all(|&b| b == 0));
}

#[test]
fn format_is_detected_by_content_not_by_name() {
    let (_d, dir) = scratch();
    let raw_named_qcow2 = dir.join("looks.qcow2");
    std::fs::write(&raw_named_qcow2, vec![1u8; 4096]).unwrap();
    let qcow2_named_img = dir.join("disk.img");
    create(&qcow2_named_img, "", "1M");
    assert_eq!(detect_format(&raw_named_qcow2).unwrap(), ImageFormat::Raw);
    assert_eq!(detect_format(&qcow2_named_img).unwrap(), ImageFormat::Qcow2);
    assert_eq!(open(&raw_named_qcow2, true, &[]).size(), 4096);
    assert_eq!(open(&qcow2_named_img, true, &[]).size(), 1 << 20);
}

#[test]
fn a_backing_chain_reads_through_every_layer_given_by_the_caller() {
    let (_d, dir) = scratch();
    let base = dir.join("base.raw");
    std::fs::write(&base, pattern(2 << 20, 1)).unwrap();
    let mid = dir.join("mid.qcow2");
    let top = dir.join("top.qcow2");
    create_over(&mid, "", Some(("base.raw", "raw")), "2M");
    qemu_io(&mid, &["write -P 0x22 64k 128k"]);
    create_over(&top, "", Some(("mid.qcow2", "qcow2")), "2M");
    qemu_io(&top, &["write -P 0x33 128k 4k"]);
    let theirs = qemu_contents(&top);
    let mut disk = open(&top, true, &[&mid, &base]);
    let ours = our_contents(disk.as_mut());
    assert!(ours == theirs, "our read of the chain differs from QEMU's");
    assert_eq!(ours[0..4], pattern(16, 1)[0..4]);
    assert_eq!(ours[64 << 10], 0x22);
    assert_eq!(ours[128 << 10], 0x33);
    drop(disk);
    // The middle image names base.raw too: leaving it out of the chain is refused.
    let e = kubevirt_vmm::virtio::block::open_image(
        &top,
        true,
        kubevirt_vmm::virtio::block::CacheMode::Writeback,
        &[&mid],
    )
    .err()
    .expect("a chain without the base opens")
    .to_string();
    assert!(e.contains("mid.qcow2") && e.contains("base.raw"), "{e}");
}
