//! Real vCPUs on /dev/kvm: output, port I/O, MMIO and concurrency.

mod common;

use std::io::{Read, Write};

use common::{Recorder, Seen, wait};
use kubevirt_vmm::arch::layout::MMIO_DEVICES_START;
use kubevirt_vmm::testguest::{REPORT_PORT, programs};
use kubevirt_vmm::{ConsoleBuffer, ConsoleConfig, ExitReason, Vm, VmState};

#[test]
fn hello_reaches_a_buffer_console_and_exits_cleanly() {
    let guest = programs::hello().unwrap();
    let console = ConsoleBuffer::new();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Buffer(console.clone()))).unwrap();
    assert_eq!(vm.state(), VmState::Created);
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    assert_eq!(console.text(), programs::HELLO_TEXT);
    let stats = vm.console_stats().unwrap();
    assert_eq!(stats.bytes_out(), programs::HELLO_TEXT.len() as u64);
    assert!(stats.first_byte_at().unwrap() > vm.created_at());
    assert_eq!(vm.state(), VmState::Exited);
}

#[test]
fn serial_output_reaches_a_file_console() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let path = dir.as_path().join("console.log");
    let guest = programs::print_and_exit("file", b"to the file\n", 0).unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::File(path.clone()))).unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "to the file\n");
}

#[test]
fn serial_output_reaches_a_pipe_console() {
    let (mut reader, writer) = std::io::pipe().unwrap();
    let guest = programs::print_and_exit("pipe", b"through a pipe", 7).unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Fd(writer.into()))).unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 7 });
    drop(vm);
    let mut out = String::new();
    reader.read_to_string(&mut out).unwrap();
    assert_eq!(out, "through a pipe");
}

#[test]
fn serial_output_reaches_a_unix_socket_client() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let path = dir.as_path().join("serial.sock");
    let guest = programs::hello().unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::UnixSocket(path.clone()))).unwrap();
    // The VMM listens from creation on, so a client connected before start sees everything.
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    drop(vm);
    let mut out = String::new();
    client.read_to_string(&mut out).unwrap();
    assert_eq!(out, programs::HELLO_TEXT);
}

#[test]
fn port_io_and_mmio_exits_reach_the_right_devices() {
    let mmio_dev = Recorder::shared(0x5566_7788_99aa_bbcc);
    let report = Recorder::shared(0);
    let decoy = Recorder::shared(0);
    let base = MMIO_DEVICES_START;
    let guest = programs::mmio_round_trip(base + 0x10, 0x1122_3344, base + 0x24).unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .mmio_device(base, 0x1000, mmio_dev.clone())
        .mmio_device(base + 0x1000, 0x1000, decoy.clone())
        .pio_device(REPORT_PORT, 4, report.clone())
        .pio_device(REPORT_PORT + 4, 4, decoy.clone())
        .build()
        .unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    assert_eq!(
        mmio_dev.lock().unwrap().seen,
        vec![
            Seen::Write(base, 0x10, 0x1122_3344u32.to_le_bytes().to_vec()),
            Seen::Read(base, 0x24, 4)
        ]
    );
    // The value the MMIO read returned made it back into the guest and out again.
    assert_eq!(
        report.lock().unwrap().seen,
        vec![Seen::Write(
            u64::from(REPORT_PORT),
            0,
            0x99aa_bbccu32.to_le_bytes().to_vec()
        )]
    );
    assert!(decoy.lock().unwrap().seen.is_empty());
}

#[test]
fn two_vcpus_run_concurrently() {
    let report = Recorder::shared(0);
    let guest = programs::rendezvous().unwrap();
    let vm = Vm::builder(guest.vm_config(2, ConsoleConfig::Sink))
        .pio_device(REPORT_PORT, 4, report.clone())
        .build()
        .unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    let mut indices: Vec<u32> = report
        .lock()
        .unwrap()
        .seen
        .iter()
        .map(|s| match s {
            Seen::Write(_, _, d) => u32::from_le_bytes(d[..4].try_into().unwrap()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    indices.sort();
    assert_eq!(indices, vec![0, 1], "both vCPUs passed the rendezvous");
}

/// Sockets × cores × threads reach KVM: each vCPU is created with its topology's APIC ID
/// (here sparse: 2 sockets of 3 cores number 0, 1, 2, 4, 5, 6), which its local APIC reports,
/// and the VM runs.
#[test]
fn vcpus_carry_the_apic_ids_of_their_topology() {
    let topology = kubevirt_vmm::CpuTopology::new(2, 3, 1).unwrap();
    let guest = programs::rendezvous().unwrap();
    let vm = Vm::builder(
        guest
            .vm_config(1, ConsoleConfig::Sink)
            .with_topology(topology),
    )
    .pio_device(REPORT_PORT, 4, Recorder::shared(0))
    .build()
    .unwrap();
    let ids: Vec<u8> = (0..6)
        .map(|i| {
            let lapic = vm.vcpu_lapic(i).unwrap();
            // xAPIC ID register (offset 0x20): the ID in bits 31:24.
            lapic.regs[0x23] as u8
        })
        .collect();
    assert_eq!(ids, [0, 1, 2, 4, 5, 6]);
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
}

fn reported_u32s(rec: &std::sync::Mutex<Recorder>) -> Vec<u32> {
    rec.lock()
        .unwrap()
        .seen
        .iter()
        .map(|s| match s {
            Seen::Write(_, _, d) => u32::from_le_bytes(d[..4].try_into().unwrap()),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// The guest's own `cpuid` shows the feature mask and the per-vCPU topology the VMM set.
///
/// Skipped on KVM-on-PVM: there a 64-bit guest's `cpuid` (CPL 3, and CPL 0 too) does not exit
/// to KVM and returns the host's values (measured: the host's APIC ID and logical count), so
/// only hardware KVM can show the table the VMM installed.
#[test]
fn cpuid_seen_by_the_guest_follows_the_feature_mask() {
    if kubevirt_vmm::host_is_pvm() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED cpuid_seen_by_the_guest_follows_the_feature_mask: on KVM-on-PVM a 64-bit guest's \
             cpuid is not intercepted, so the guest sees host CPUID (the mask is unit-tested in arch::cpuid)"
        );
        return;
    }
    let guest = programs::cpuid_report(1).unwrap();
    let run = |mask: kubevirt_vmm::CpuFeatureMask| {
        let report = Recorder::shared(0);
        let config = guest
            .vm_config(1, ConsoleConfig::Sink)
            .with_cpu_features(mask);
        let vm = Vm::builder(config)
            .pio_device(REPORT_PORT, 4, report.clone())
            .build()
            .unwrap();
        vm.start().unwrap();
        assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
        reported_u32s(&report)
    };
    let full = run(kubevirt_vmm::CpuFeatureMask::default());
    let (ebx, ecx, edx) = (full[1], full[2], full[3]);
    assert_ne!(edx & (1 << 26), 0, "SSE2 is there by default");
    assert_ne!(ecx & (1 << 31), 0, "the hypervisor bit is set");
    assert_eq!(ebx >> 24, 0, "vCPU 0 has APIC ID 0");
    assert_eq!((ebx >> 16) & 0xff, 1, "one logical processor");
    let masked = run(kubevirt_vmm::CpuFeatureMask::disable(["sse2"]).unwrap());
    assert_eq!(masked[3] & (1 << 26), 0, "SSE2 hidden by the mask");
    assert_eq!(masked[3] | (1 << 26), edx, "nothing else in EDX changed");
}

/// fw_cfg files on a VM that boots no firmware: without any, no fw_cfg (ports 0x510-0x51B
/// read nothing); with one, the device is there (its DMA register reads "QEMU CFG"); a name
/// the directory cannot hold, or one given twice, fails the build and says why.
#[test]
fn fw_cfg_files_give_a_direct_boot_vm_a_fw_cfg_and_bad_names_are_refused() {
    use kubevirt_vmm::devices::fw_cfg::{FW_CFG_DMA_PORT, FW_CFG_DMA_SIGNATURE};
    let guest = programs::hello().unwrap();
    let dma_signature = |vm: &Vm| {
        let mut v = [0u8; 8];
        let _ = vm.buses().pio.read(u64::from(FW_CFG_DMA_PORT), &mut v);
        u64::from_be_bytes(v)
    };
    let plain = Vm::new(guest.vm_config(1, ConsoleConfig::Sink)).unwrap();
    assert_ne!(
        dma_signature(&plain),
        FW_CFG_DMA_SIGNATURE,
        "no fw_cfg without files"
    );
    let config = guest
        .vm_config(1, ConsoleConfig::Sink)
        .with_fw_cfg_file("opt/test", vec![1, 2, 3]);
    let vm = Vm::new(config).unwrap();
    assert_eq!(dma_signature(&vm), FW_CFG_DMA_SIGNATURE);
    for files in [vec!["x".repeat(56)], vec!["opt/a".into(), "opt/a".into()]] {
        let mut config = guest.vm_config(1, ConsoleConfig::Sink);
        for name in files {
            config = config.with_fw_cfg_file(name, Vec::new());
        }
        let err = Vm::new(config).unwrap_err().to_string();
        assert!(err.contains("fw_cfg file"), "{err}");
    }
}

/// A fw_cfg file given with `VmConfig::with_fw_cfg_file` reaches a firmware-boot VM's fw_cfg,
/// in the directory beside the firmware's own files, with its contents. The VM is built, not
/// started: SeaBIOS runs at CPL 0, which KVM on PVM emulates slowly; the directory is read
/// through the port bus as the firmware would read it (selector 0x510, data 0x511).
#[test]
fn a_fw_cfg_file_reaches_a_firmware_boot_vm_beside_the_firmware_files() {
    use kubevirt_vmm::devices::fw_cfg::{
        FW_CFG_DATA_PORT, FW_CFG_FILE_DIR, FW_CFG_MAX_FILE_PATH, FW_CFG_SELECTOR_PORT,
    };
    use kubevirt_vmm::{BootSource, FirmwareBoot, VmConfig};

    let read_item = |vm: &Vm, key: u16, len: usize| {
        let _ = vm
            .buses()
            .pio
            .write(u64::from(FW_CFG_SELECTOR_PORT), &key.to_le_bytes());
        (0..len)
            .map(|_| {
                let mut b = [0u8];
                let _ = vm.buses().pio.read(u64::from(FW_CFG_DATA_PORT), &mut b);
                b[0]
            })
            .collect::<Vec<u8>>()
    };
    // (name, key, size) of each directory entry.
    let directory = |vm: &Vm| {
        let count = u32::from_be_bytes(read_item(vm, FW_CFG_FILE_DIR, 4).try_into().unwrap());
        let entry = 8 + FW_CFG_MAX_FILE_PATH;
        let bytes = read_item(vm, FW_CFG_FILE_DIR, 4 + count as usize * entry);
        bytes[4..]
            .chunks(entry)
            .map(|e| {
                let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
                let key = u16::from_be_bytes(e[4..6].try_into().unwrap());
                let name = String::from_utf8_lossy(&e[8..])
                    .trim_end_matches('\0')
                    .to_string();
                (name, key, size)
            })
            .collect::<Vec<_>>()
    };
    let firmware_vm = |files: &[(&str, &[u8])]| {
        let mut config = VmConfig::new(1, 32 << 20, BootSource::Firmware(FirmwareBoot::seabios()));
        for (name, contents) in files {
            config = config.with_fw_cfg_file(*name, contents.to_vec());
        }
        Vm::new(config).unwrap()
    };

    let plain = directory(&firmware_vm(&[]));
    assert!(
        plain.iter().any(|(n, ..)| n == "etc/e820"),
        "the firmware's own files are there: {plain:?}"
    );
    let ours: &[u8] = b"given with with_fw_cfg_file";
    let vm = firmware_vm(&[("opt/org.kubevirt/test", ours)]);
    let dir = directory(&vm);
    let (_, key, size) = dir
        .iter()
        .find(|(n, ..)| n == "opt/org.kubevirt/test")
        .unwrap_or_else(|| panic!("the file is in the directory: {dir:?}"));
    assert_eq!(*size as usize, ours.len());
    assert_eq!(read_item(&vm, *key, ours.len()), ours);
    for (name, ..) in &plain {
        assert!(
            dir.iter().any(|(n, ..)| n == name),
            "the firmware's {name} is still there beside it"
        );
    }
    assert_eq!(dir.len(), plain.len() + 1, "{dir:?}");
}
