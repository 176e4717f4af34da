//! Helpers for the qcow2 tests: Debian's `qemu-img` and `qemu-io` (package qemu-utils,
//! installed by scripts/setup.sh) make and check the images.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kubevirt_vmm::virtio::block::{BlockBackend, CacheMode, open_image};

/// Runs `tool args`, panicking with its output when it fails; returns stdout.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("running {tool} failed ({e}): install qemu-utils (scripts/setup.sh does)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// `qemu-img create -f qcow2 OPTIONS path size`.
pub fn create(path: &Path, options: &str, size: &str) {
    create_over(path, options, None, size);
}

/// `qemu-img create -f qcow2 OPTIONS -b NAME -F FORMAT path size`: an overlay over the backing
/// file `backing` = (name as the header records it, its format).
pub fn create_over(path: &Path, options: &str, backing: Option<(&str, &str)>, size: &str) {
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    if let Some((name, format)) = backing {
        args.extend(["-b", name, "-F", format]);
    }
    let p = path.to_str().unwrap();
    args.extend([p, size]);
    run("qemu-img", &args);
}

/// `qemu-io -c CMD ...` on `path` (a qcow2 image).
pub fn qemu_io(path: &Path, cmds: &[&str]) -> String {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args)
}

/// The disk's contents as QEMU reads them (`qemu-img convert -O raw`).
pub fn qemu_contents(path: &Path) -> Vec<u8> {
    let out = path.with_extension("qemu-raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            path.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// `qemu-img check`: panics unless it reports no errors and no leaks.
pub fn check_clean(path: &Path) -> String {
    let text = run("qemu-img", &["check", path.to_str().unwrap()]);
    assert!(
        text.contains("No errors were found"),
        "qemu-img check {}:\n{text}",
        path.display()
    );
    assert!(
        !text.contains("leaked"),
        "qemu-img check {}:\n{text}",
        path.display()
    );
    text
}

/// The whole disk as this crate reads it.
pub fn our_contents(disk: &mut dyn BlockBackend) -> Vec<u8> {
    let mut all = vec![0u8; disk.size() as usize];
    // Odd-sized pieces cross cluster boundaries.
    let mut at = 0;
    while at < all.len() {
        let n = (all.len() - at).min(3 * 4096 + 512);
        disk.read_at(&mut all[at..at + n], at as u64).unwrap();
        at += n;
    }
    all
}

/// Opens `path` through the format-detecting entry point.
pub fn open(path: &Path, read_only: bool, backing: &[&Path]) -> Box<dyn BlockBackend> {
    open_image(path, read_only, CacheMode::Writeback, backing)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A byte pattern that differs per offset and seed.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

/// A scratch directory (removed when dropped).
pub fn scratch() -> (vmm_sys_util::tempdir::TempDir, PathBuf) {
    let d = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let p = d.as_path().to_owned();
    (d, p)
}
