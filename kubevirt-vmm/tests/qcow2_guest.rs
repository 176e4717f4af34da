//! The qcow2 backend's guest-memory paths (`read_to_guest`/`write_from_guest`, which move
//! allocated clusters with `preadv`/`pwritev` and bounce the rest) give the same bytes as
//! `read_at`/`write_at`, and QEMU reads what they wrote.

mod qcow2_common;

use kubevirt_vmm::{GuestMemoryMmap, GuestSlice};
use qcow2_common::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Guest buffers at `pieces` (address, length), one crossing the boundary of the two regions.
fn slices<'m>(mem: &'m GuestMemoryMmap, pieces: &[(u64, usize)]) -> Vec<GuestSlice<'m>> {
    pieces
        .iter()
        .flat_map(|&(a, l)| mem.get_slices(GuestAddress(a), l).map(|s| s.unwrap()))
        .collect()
}

#[test]
fn guest_memory_transfers_match_the_byte_paths_and_qemu() {
    let (_d, dir) = scratch();
    let base = dir.join("base.raw");
    std::fs::write(&base, pattern(2 << 20, 5)).unwrap();
    let p = dir.join("g.qcow2");
    create_over(&p, "cluster_size=4096", Some(("base.raw", "raw")), "2M");
    qemu_io(&p, &["write -P 0x5a 0 64k"]);
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x4_0000),
        (GuestAddress(0x4_0000), 0x4_0000),
    ])
    .unwrap();
    // 3 buffers, 4 slices: 512 B, 12 KiB across the region boundary, 20 KiB.
    let pieces = [
        (0x100u64, 512usize),
        (0x3_e000, 12 << 10),
        (0x5_0000, 20 << 10),
    ];
    let len: usize = pieces.iter().map(|p| p.1).sum();
    assert_eq!(slices(&mem, &pieces).len(), 4);
    let mut model = pattern(2 << 20, 5);
    model[..64 << 10].fill(0x5a);
    let mut disk = open(&p, false, &[&base]);
    // Writes into owned clusters (direct), unallocated ones over the base (copy-on-write) and
    // a mix, at offsets not aligned to clusters.
    for (i, at) in [1000u64, 60 << 10, (1 << 20) + 300].into_iter().enumerate() {
        let data = pattern(len, i as u8 + 1);
        let mut o = 0;
        for &(a, l) in &pieces {
            mem.write_slice(&data[o..o + l], GuestAddress(a)).unwrap();
            o += l;
        }
        disk.write_from_guest(&slices(&mem, &pieces), at).unwrap();
        model[at as usize..at as usize + len].copy_from_slice(&data);
    }
    assert!(
        our_contents(disk.as_mut()) == model,
        "read_at after write_from_guest"
    );
    // Read back into zeroed guest buffers at several offsets.
    for at in [
        0u64,
        1000,
        60 << 10,
        300 << 10,
        (1 << 20) + 4096,
        (2 << 20) - len as u64,
    ] {
        for &(a, l) in &pieces {
            mem.write_slice(&vec![0u8; l], GuestAddress(a)).unwrap();
        }
        disk.read_to_guest(&slices(&mem, &pieces), at).unwrap();
        let mut back = Vec::new();
        for &(a, l) in &pieces {
            let mut b = vec![0u8; l];
            mem.read_slice(&mut b, GuestAddress(a)).unwrap();
            back.extend(b);
        }
        assert!(
            back == model[at as usize..at as usize + len],
            "read_to_guest at {at}"
        );
    }
    assert!(
        disk.read_to_guest(&slices(&mem, &pieces), (2 << 20) - 512)
            .is_err(),
        "past the end"
    );
    disk.flush().unwrap();
    drop(disk);
    check_clean(&p);
    assert!(qemu_contents(&p) == model, "QEMU reads other bytes");
}

#[test]
fn guest_reads_over_a_shorter_backing_image_take_the_base_then_zeroes() {
    let (_d, dir) = scratch();
    let base = dir.join("short.raw");
    // 1 MiB + 4 KiB of base under a 2 MiB overlay with 64 KiB clusters: the cluster at
    // 1 MiB is only partly backed.
    let base_len = (1 << 20) + 4096;
    std::fs::write(&base, pattern(base_len, 9)).unwrap();
    let p = dir.join("o.qcow2");
    create_over(&p, "cluster_size=65536", Some(("short.raw", "raw")), "2M");
    let mut model = pattern(base_len, 9);
    model.resize(2 << 20, 0);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4_0000)]).unwrap();
    // Wholly backed (direct from the base), across the base's end, past it, and one request
    // covering all three.
    for (at, len) in [
        (4096u64, 8192usize),
        ((1 << 20) - 512, 8192),
        ((1 << 20) + 8192, 4096),
        ((1 << 20) - 0x1_0000, 0x4_0000),
    ] {
        mem.write_slice(&vec![0xeeu8; len], GuestAddress(0))
            .unwrap();
        let s = [mem.get_slice(GuestAddress(0), len).unwrap()];
        let mut disk = open(&p, true, &[&base]);
        disk.read_to_guest(&s, at).unwrap();
        let mut back = vec![0u8; len];
        mem.read_slice(&mut back, GuestAddress(0)).unwrap();
        assert!(
            back == model[at as usize..at as usize + len],
            "read_to_guest of {len} bytes at {at}"
        );
    }
    assert!(qemu_contents(&p) == model, "QEMU reads other bytes");
}
