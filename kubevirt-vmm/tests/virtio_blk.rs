//! Real vCPUs on /dev/kvm: a CPL 3 polling driver finds two virtio-blk disks on PCI, writes,
//! flushes, reads back and asks for the serial; the host checks the files afterwards.

mod common;

use std::os::unix::fs::FileExt;

use common::wait;
use kubevirt_vmm::testguest::virtio_blk::{self, *};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
use vm_memory::{Bytes, GuestAddress};

const DISK_SIZE: u64 = 1 << 20;

fn read_u32(vm: &Vm, addr: u64) -> u32 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

fn read_u64(vm: &Vm, addr: u64) -> u64 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

#[test]
fn guest_driver_writes_flushes_reads_and_sees_read_only_and_serial() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let rw_path = dir.as_path().join("rw.img");
    let ro_path = dir.as_path().join("ro.img");
    std::fs::write(&rw_path, vec![0u8; DISK_SIZE as usize]).unwrap();
    let ro_content: Vec<u8> = (0..DISK_SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(&ro_path, &ro_content).unwrap();

    let rw = Block::new(
        Box::new(RawFile::open(&rw_path, false).unwrap()),
        "kubevirt-rw-disk",
    );
    let ro = Block::new(
        Box::new(RawFile::open(&ro_path, true).unwrap()),
        "ro-serial-that-is-longer-than-20",
    );
    let guest = virtio_blk::virtio_blk_check().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(rw))
        .virtio_device(Box::new(ro))
        .build()
        .unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });

    assert_eq!(
        read_u32(&vm, RESULTS + RES_FOUND),
        2,
        "the driver found both disks"
    );
    // The driver notified each disk's queue twice (two batches); every notify was caught by
    // its ioeventfd in KVM, none reached the transport in userspace.
    assert_eq!(read_u32(&vm, RESULTS + RES_USED_IDX), 4);
    assert_eq!(
        vm.virtio_userspace_notifies(),
        0,
        "queue notifications exited to userspace instead of hitting their ioeventfd"
    );
    let io_len = IO_LEN as usize;
    let offset = IO_SECTOR * 512;
    let expected: Vec<u8> = (0..IO_LEN / 4)
        .flat_map(|i| pattern(i).to_le_bytes())
        .collect();
    // Slots 0 and 1 are the chipset's (host bridge, PIIX).
    for (k, slot, read_only) in [(0u64, 2u32, false), (1, 3, true)] {
        let res = RESULTS + 0x100 * k;
        assert_eq!(read_u32(&vm, res + RES_SLOT), slot);
        let features = read_u64(&vm, res + RES_FEATURES);
        assert_ne!(features & (1 << 32), 0, "VERSION_1 offered");
        assert_eq!(
            features & (1 << 5) != 0,
            read_only,
            "RO feature of disk {k}"
        );
        assert_ne!(features & (1 << 9), 0, "FLUSH offered");
        assert_eq!(
            read_u32(&vm, res + RES_STATUS),
            0x0b,
            "FEATURES_OK accepted"
        );
        assert_eq!(read_u64(&vm, res + RES_CAPACITY), DISK_SIZE / 512);
        assert_eq!(read_u32(&vm, res + RES_USED_IDX), 4);
        let status: Vec<u32> = (0..4)
            .map(|i| read_u32(&vm, res + RES_REQ_STATUS + 4 * i))
            .collect();
        // write, flush, read, GET_ID
        let write_status = if read_only { 1 } else { 0 };
        assert_eq!(
            status,
            vec![write_status, 0, 0, 0],
            "request statuses of disk {k}"
        );
        let mut serial = [0u8; 20];
        vm.memory()
            .read_slice(&mut serial, GuestAddress(res + RES_SERIAL))
            .unwrap();
        let want: &[u8; 20] = if read_only {
            b"ro-serial-that-is-lo"
        } else {
            b"kubevirt-rw-disk\0\0\0\0"
        };
        assert_eq!(&serial, want);
        let mut read_back = vec![0u8; io_len];
        vm.memory()
            .read_slice(
                &mut read_back,
                GuestAddress(READ_BUF + k * u64::from(IO_LEN)),
            )
            .unwrap();
        if read_only {
            assert_eq!(
                read_u32(&vm, res + RES_COMPARE),
                1,
                "a read-only disk keeps its data"
            );
            assert_eq!(
                read_back,
                ro_content[offset as usize..offset as usize + io_len]
            );
        } else {
            assert_eq!(
                read_u32(&vm, res + RES_COMPARE),
                0,
                "the guest read what it wrote"
            );
            assert_eq!(read_back, expected);
        }
    }
    drop(vm);

    // The host files: the pattern landed in the read-write image, nothing else changed.
    let rw_file = std::fs::File::open(&rw_path).unwrap();
    let mut on_disk = vec![0u8; io_len];
    rw_file.read_exact_at(&mut on_disk, offset).unwrap();
    assert_eq!(on_disk, expected);
    let whole = std::fs::read(&rw_path).unwrap();
    assert!(whole[..offset as usize].iter().all(|&b| b == 0));
    assert!(whole[offset as usize + io_len..].iter().all(|&b| b == 0));
    assert_eq!(std::fs::read(&ro_path).unwrap(), ro_content);
}

#[test]
fn an_unusable_backing_file_is_a_clear_error() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let err = RawFile::open(&dir.as_path().join("nope.img"), false).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nope.img") && msg.contains("read-write"),
        "{msg}"
    );
}

#[test]
fn guest_driver_gets_random_bytes_from_virtio_rng() {
    let guest = virtio_blk::virtio_blk_check().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(kubevirt_vmm::virtio::rng::Rng::new()))
        .build()
        .unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    assert_eq!(read_u32(&vm, RESULTS + RES_FOUND), 0, "no disks");
    assert_eq!(read_u32(&vm, RESULTS + RES_RNG_FOUND), 1);
    assert_eq!(read_u32(&vm, RNG_RESULTS + RES_SLOT), 2);
    assert_eq!(read_u32(&vm, RNG_RESULTS + RES_STATUS), 0x0b);
    assert_eq!(read_u32(&vm, RNG_RESULTS + RES_RNG_USED_LEN), RNG_LEN);
    let mut bytes = vec![0u8; RNG_LEN as usize];
    vm.memory()
        .read_slice(&mut bytes, GuestAddress(RNG_BUF))
        .unwrap();
    let distinct: std::collections::BTreeSet<u8> = bytes.iter().copied().collect();
    // 64 random bytes have fewer than 20 distinct values with negligible probability.
    assert!(distinct.len() >= 20, "{bytes:02x?}");
}

/// A `Write` the test can read back.
#[derive(Clone, Default)]
struct SharedText(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn guest_driver_prints_through_virtio_console() {
    let text = SharedText::default();
    let console = kubevirt_vmm::virtio::console::Console::new(Box::new(text.clone())).unwrap();
    let guest = virtio_blk::virtio_blk_check().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(console))
        .build()
        .unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    assert_eq!(read_u32(&vm, RESULTS + RES_CONSOLE_FOUND), 1);
    assert_eq!(read_u32(&vm, RESULTS + 0x300 + RES_STATUS), 0x0b);
    drop(vm);
    assert_eq!(&*text.0.lock().unwrap(), CONSOLE_TEXT);
}
