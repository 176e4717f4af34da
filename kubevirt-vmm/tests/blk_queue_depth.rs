//! The streaming virtio-blk guest with 1, 2 and 4 requests in flight completes every request
//! with status 0 and marks every phase, on a real vCPU against a real file. Its throughput
//! against the host is measured by `cargo bench --bench vmm_blk`.

use kubevirt_vmm::testguest::blk_stream_run::{create_image, run_guest, run_host};

#[test]
fn every_depth_completes_without_errors() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let path = dir.as_path().join("disk.img");
    create_image(&path, 8).unwrap();
    for depth in [1, 2, 4] {
        let t = run_guest(&path, 8, depth).unwrap_or_else(|e| panic!("depth {depth}: {e}"));
        assert!(t.write > std::time::Duration::ZERO && t.read > std::time::Duration::ZERO);
    }
    // The host peer runs on the same file too.
    run_host(&path, 8).unwrap();
}

#[test]
fn a_missing_disk_is_an_exit_code_with_a_meaning() {
    use kubevirt_vmm::testguest::virtio_blk_stream::{EXIT_NO_DEVICE, Marks, virtio_blk_stream};
    use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
    let guest = virtio_blk_stream(1, 1, Marks::Serial).unwrap();
    let config = kubevirt_vmm::VmConfig::new(
        1,
        kubevirt_vmm::testguest::virtio_blk_stream::STREAM_MEMORY_SIZE,
        guest.boot_source(),
    )
    .with_serial(ConsoleConfig::Sink)
    .with_debug_exit();
    let vm = Vm::builder(config).build().unwrap();
    vm.start().unwrap();
    let reason = vm
        .wait_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| vm.stop());
    assert_eq!(
        reason,
        ExitReason::DebugExit {
            code: EXIT_NO_DEVICE
        }
    );
}
