//! Property test: random writes, zeroes, discards, reads, flushes and reopens through the qcow2
//! backend behave like a plain in-memory disk, and QEMU agrees at the end (`qemu-img check`
//! clean, `qemu-img convert -O raw` equal to the model). Also: the image as it lies on disk
//! between flushes (what a crash would leave) has leaks at worst, never errors. Writes go
//! through both paths: `write_at` and `write_from_guest` with the data cut into guest buffers
//! of random sizes (the run-batching path, whole-cluster allocation included); reads through
//! both `read_at` and `read_to_guest` (allocated clusters and the backing file straight into
//! guest memory, the rest through a buffer).

mod qcow2_common;

use std::path::Path;
use std::process::Command;

use kubevirt_vmm::GuestMemoryMmap;
use proptest::prelude::*;
use qcow2_common::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const DISK: u64 = 1 << 20;

#[derive(Debug, Clone)]
enum Op {
    Write(u64, usize, u8),
    /// Offset, length, seed, the size of each guest buffer.
    GuestWrite(u64, usize, u8, usize),
    Zero(u64, u64),
    Discard(u64, u64),
    Read(u64, usize),
    /// Offset, length, the size of each guest buffer.
    GuestRead(u64, usize, usize),
    Flush,
    Reopen,
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..DISK / 512, 1u64..300).prop_map(|(s, n)| {
        let at = s * 512;
        (at, (n * 97).min(DISK - at).max(1))
    })
}

/// Up to ~300 KiB: spans several 64 KiB clusters.
fn big_range() -> impl Strategy<Value = (u64, u64)> {
    (0..DISK / 512, 1u64..300).prop_map(|(s, n)| {
        let at = s * 512;
        (at, (n * 997).min(DISK - at).max(1))
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (big_range(), any::<u8>(), prop_oneof![Just(4096usize), 512usize..70_000])
            .prop_map(|((a, n), s, cut)| Op::GuestWrite(a, n as usize, s, cut)),
        4 => (range(), any::<u8>()).prop_map(|((a, n), s)| Op::Write(a, n as usize, s)),
        1 => range().prop_map(|(a, n)| Op::Zero(a, n)),
        1 => range().prop_map(|(a, n)| Op::Discard(a, n)),
        2 => range().prop_map(|(a, n)| Op::Read(a, n as usize)),
        2 => (big_range(), prop_oneof![Just(4096usize), 512usize..70_000])
            .prop_map(|((a, n), cut)| Op::GuestRead(a, n as usize, cut)),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// `qemu-img check -U` on a copy of the image as it is on disk now: leaks are allowed (exit 3),
/// errors are not.
fn on_disk_state_is_consistent(path: &Path) {
    let copy = path.with_extension("crash");
    std::fs::copy(path, &copy).unwrap();
    // Without its backing file name, so QEMU does not open (and lock) the backing file.
    let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 12], 8).unwrap();
    let out = Command::new("qemu-img")
        .args(["check", "-U", copy.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    std::fs::remove_file(&copy).unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)) && !text.contains("ERROR"),
        "image between flushes is corrupt:\n{text}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn qcow2_behaves_like_a_raw_disk(
        v3 in any::<bool>(),
        cluster_bits in prop_oneof![Just(9u32), Just(12), Just(16)],
        with_backing in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let (_d, dir) = scratch();
        let base = dir.join("base.raw");
        let p = dir.join("disk.qcow2");
        let opts = format!("compat={},cluster_size={}", if v3 { "1.1" } else { "0.10" }, 1u64 << cluster_bits);
        let mut model = vec![0u8; DISK as usize];
        let backing: Vec<&Path> = if with_backing {
            model = pattern(DISK as usize - 4096, 99);
            std::fs::write(&base, &model).unwrap();
            model.resize(DISK as usize, 0);
            create_over(&p, &opts, Some(("base.raw", "raw")), "1M");
            vec![base.as_path()]
        } else {
            create(&p, &opts, "1M");
            vec![]
        };
        let mut disk = open(&p, false, &backing);
        for op in ops {
            match op {
                Op::Write(at, n, seed) => {
                    let data = pattern(n, seed);
                    disk.write_at(&data, at).unwrap();
                    model[at as usize..at as usize + n].copy_from_slice(&data);
                }
                Op::GuestWrite(at, n, seed, cut) => {
                    let data = pattern(n, seed);
                    let size = n.next_multiple_of(4096);
                    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap();
                    mem.write_slice(&data, GuestAddress(0)).unwrap();
                    let slices: Vec<_> = (0..n)
                        .step_by(cut)
                        .map(|o| mem.get_slice(GuestAddress(o as u64), cut.min(n - o)).unwrap())
                        .collect();
                    disk.write_from_guest(&slices, at).unwrap();
                    model[at as usize..at as usize + n].copy_from_slice(&data);
                }
                Op::Zero(at, n) | Op::Discard(at, n) if matches!(op, Op::Zero(..)) => {
                    disk.write_zeroes(at, n).unwrap();
                    model[at as usize..(at + n) as usize].fill(0);
                }
                Op::Discard(at, n) | Op::Zero(at, n) => {
                    disk.discard(at, n).unwrap();
                    model[at as usize..(at + n) as usize].fill(0);
                }
                Op::Read(at, n) => {
                    let mut b = vec![0u8; n];
                    disk.read_at(&mut b, at).unwrap();
                    prop_assert!(b == model[at as usize..at as usize + n], "read {} at {}", n, at);
                }
                Op::GuestRead(at, n, cut) => {
                    let size = n.next_multiple_of(4096);
                    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap();
                    let slices: Vec<_> = (0..n)
                        .step_by(cut)
                        .map(|o| mem.get_slice(GuestAddress(o as u64), cut.min(n - o)).unwrap())
                        .collect();
                    disk.read_to_guest(&slices, at).unwrap();
                    let mut b = vec![0u8; n];
                    mem.read_slice(&mut b, GuestAddress(0)).unwrap();
                    prop_assert!(b == model[at as usize..at as usize + n], "guest read {} at {}", n, at);
                }
                Op::Flush => {
                    disk.flush().unwrap();
                    on_disk_state_is_consistent(&p);
                }
                Op::Reopen => {
                    on_disk_state_is_consistent(&p);
                    drop(disk);
                    disk = open(&p, false, &backing);
                }
            }
        }
        prop_assert!(our_contents(disk.as_mut()) == model);
        on_disk_state_is_consistent(&p);
        drop(disk);
        check_clean(&p);
        prop_assert!(qemu_contents(&p) == model, "QEMU reads other bytes");
    }
}
