//! qcow2 images that must not be used are refused with an error naming the image and what is
//! wrong, never a panic: corrupt headers and tables, unsupported features, backing files the
//! caller did not allow (path traversal), and images another VM holds.

mod qcow2_common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use kubevirt_vmm::virtio::block::{CacheMode, open_image};
use qcow2_common::*;

fn open_err(path: &Path, read_only: bool, backing: &[&Path]) -> String {
    match open_image(path, read_only, CacheMode::Writeback, backing) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

fn poke(path: &Path, at: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn be64(path: &Path, at: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    u64::from_be_bytes(b)
}

#[test]
fn corrupt_headers_and_tables_are_refused_naming_what_is_wrong() {
    let (_d, dir) = scratch();
    let good = dir.join("good.qcow2");
    create(&good, "compat=1.1", "4M");
    qemu_io(&good, &["write -P 0x5a 0 64k"]);
    let l1 = be64(&good, 40);
    let cases: &[(u64, &[u8], &str)] = &[
        (4, &9u32.to_be_bytes(), "qcow2 version 9"),
        (20, &40u32.to_be_bytes(), "cluster_bits"),
        (32, &2u32.to_be_bytes(), "encryption"),
        (72, &(1u64 << 2).to_be_bytes(), "external data file"),
        (
            72,
            &(1u64 << 20).to_be_bytes(),
            "unknown incompatible features",
        ),
        (40, &(1u64 << 40).to_be_bytes(), "L1 table"),
        (48, &(7u64 << 36).to_be_bytes(), "refcount table"),
        (36, &0u32.to_be_bytes(), "l1_size"),
        (l1, &(0x8000_00ff_0000_0000u64).to_be_bytes(), "L1 entry 0"),
    ];
    for (i, (at, bytes, word)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.qcow2"));
        std::fs::copy(&good, &p).unwrap();
        poke(&p, *at, bytes);
        let e = open_err(&p, true, &[]);
        assert!(
            e.contains(word) && e.contains(&format!("bad{i}.qcow2")),
            "{word}: {e}"
        );
    }
    // Truncated to part of a header.
    let p = dir.join("short.qcow2");
    std::fs::write(&p, &std::fs::read(&good).unwrap()[..40]).unwrap();
    assert!(open_err(&p, true, &[]).contains("shorter than a qcow2 header"));
}

#[test]
fn an_l2_entry_pointing_outside_the_file_fails_the_read_not_the_process() {
    let (_d, dir) = scratch();
    let p = dir.join("l2.qcow2");
    create(&p, "compat=1.1", "4M");
    qemu_io(&p, &["write -P 0x5a 0 64k"]);
    let l2 = be64(&p, be64(&p, 40)) & 0x00ff_ffff_ffff_fe00;
    poke(&p, l2, &(0x8000_0100_0000_0000u64).to_be_bytes());
    let mut disk = open(&p, true, &[]);
    let e = disk.read_at(&mut [0u8; 512], 0).unwrap_err().to_string();
    assert!(e.contains("outside") && e.contains("l2.qcow2"), "{e}");
    let mut b = [0u8; 512];
    disk.read_at(&mut b, 1 << 20).unwrap(); // other clusters still read
}

#[test]
fn backing_files_come_from_the_caller_not_the_image() {
    let (_d, dir) = scratch();
    let base = dir.join("base.raw");
    std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
    let other = dir.join("other.raw");
    std::fs::write(&other, vec![8u8; 1 << 20]).unwrap();
    let top = dir.join("top.qcow2");
    create_over(&top, "", Some(("base.raw", "raw")), "1M");
    let e = open_err(&top, true, &[]);
    assert!(
        e.contains("names backing file \"base.raw\"") && e.contains("not given"),
        "{e}"
    );
    let e = open_err(&top, true, &[&other]);
    assert!(
        e.contains("not the given") && e.contains("other.raw"),
        "{e}"
    );
    // A name that climbs out of the image's directory is just another name that must match.
    let evil = dir.join("evil.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "../../../../etc/passwd",
            "-F",
            "raw",
            evil.to_str().unwrap(),
            "1M",
        ],
    );
    let e = open_err(&evil, true, &[&base]);
    assert!(e.contains("etc/passwd") && e.contains("refused"), "{e}");
    // No backing named, one given: refused too.
    let plain = dir.join("plain.qcow2");
    create(&plain, "", "1M");
    assert!(open_err(&plain, true, &[&base]).contains("has no backing file"));
    // The right one opens.
    let mut disk = open(&top, true, &[&base]);
    let mut b = [0u8; 4];
    disk.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [7; 4]);
}

#[test]
fn the_writable_top_is_held_alone_and_the_backing_file_shared() {
    let (_d, dir) = scratch();
    let base = dir.join("base.raw");
    std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
    let top = dir.join("top.qcow2");
    create_over(&top, "", Some(("base.raw", "raw")), "1M");
    let writer = open(&top, false, &[&base]);
    assert!(open_err(&top, true, &[&base]).contains("in use by another VM"));
    // The base is shared: other readers may open it, a writer may not.
    let reader = open(&base, true, &[]);
    assert!(open_err(&base, false, &[]).contains("in use by another VM"));
    drop((writer, reader));
    // Released once every descriptor of the open file description is closed. A process that
    // another test thread forks (qemu-img) holds a copy of our descriptors until its exec closes
    // them (O_CLOEXEC), so the release may trail the drop by that moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match open_image(&top, false, CacheMode::Writeback, &[&base]) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("in use by another VM"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("the lock was not released after both closed: {e}"),
        }
    }
}

#[test]
fn images_in_states_we_cannot_write_open_read_only_only() {
    let (_d, dir) = scratch();
    let p = dir.join("snap.qcow2");
    create(&p, "", "1M");
    run("qemu-img", &["snapshot", "-c", "s1", p.to_str().unwrap()]);
    let e = open_err(&p, false, &[]);
    assert!(
        e.contains("internal snapshots") && e.contains("snap.qcow2"),
        "{e}"
    );
    open(&p, true, &[]);
    let p = dir.join("dirty.qcow2");
    create(&p, "", "1M");
    poke(&p, 72, &1u64.to_be_bytes());
    assert!(open_err(&p, false, &[]).contains("not closed cleanly"));
}
