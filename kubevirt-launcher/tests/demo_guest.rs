//! The demo guest on real vCPUs, attached as the launcher attaches it: virtio-blk disks with
//! serials, a cloud-init ISO made by the launcher's generator, the serial console for commands
//! and ACPI for power-off.

use kubevirt_api::object::Object;
use kubevirt_launcher::cloudinit::{self, NoSecrets};
use kubevirt_testsupport::tempdir;
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{ConsoleBuffer, ConsoleConfig, ExitReason, Vm};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MEMORY: u64 = 16 << 20;

/// The cloud-init ISO of a VMI written as `yaml`.
fn cloud_init_iso(yaml: &str, dir: &Path) -> PathBuf {
    let doc = kubevirt_api::codec::documents_from_yaml(yaml)
        .unwrap()
        .remove(0);
    // Only its cloud-init volume matters here, not whether it could be launched.
    let Object::VirtualMachineInstance(vmi) = Object::decode(&doc.value).unwrap() else {
        panic!("the document is a VMI");
    };
    let volume = cloudinit::from_vmi(&vmi, &NoSecrets).unwrap().unwrap();
    let path = dir.join("cloudinit.iso");
    std::fs::write(&path, volume.disk.to_iso().unwrap()).unwrap();
    path
}

struct Guest {
    vm: Vm,
    console: ConsoleBuffer,
}

impl Guest {
    fn boot(disks: &[(&Path, bool, &str)]) -> Guest {
        let console = ConsoleBuffer::new();
        let mut config = kubevirt_demo_guest::vm_config(
            kubevirt_vmm::Privilege::Kernel,
            ConsoleConfig::Buffer(console.clone()),
        );
        config.memory_size = MEMORY;
        let mut builder = Vm::builder(config);
        for (path, readonly, serial) in disks {
            let backend = RawFile::open(path, *readonly).unwrap();
            builder = builder.virtio_device(Box::new(Block::new(Box::new(backend), serial)));
        }
        let vm = builder.build().unwrap();
        vm.start().unwrap();
        Guest { vm, console }
    }

    /// Waits until the console shows `text`; returns everything so far.
    fn expect(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.console.text();
            if out.contains(text) {
                return out;
            }
            assert!(
                Instant::now() < deadline && self.vm.wait_timeout(Duration::ZERO).is_none(),
                "the guest never printed {text:?}; console:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn type_line(&self, line: &str) {
        self.vm.serial_input(format!("{line}\r").as_bytes());
    }
}

const NOCLOUD_VMI: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: testvm, namespace: default}
spec:
  domain:
    devices:
      disks:
      - {name: data, disk: {bus: virtio}}
      - {name: cloudinit, disk: {bus: virtio}}
  volumes:
  - {name: data, emptyDisk: {capacity: 1Mi}}
  - name: cloudinit
    cloudInitNoCloud:
      userData: |
        #cloud-config
        hostname: from-user-data
        runcmd: [echo hello]
"#;

#[test]
fn reads_its_disks_and_nocloud_data_answers_commands_and_powers_off() {
    let dir = tempdir("nocloud");
    let data = dir.join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    let iso = cloud_init_iso(NOCLOUD_VMI, &dir);
    let iso_len = std::fs::metadata(&iso).unwrap().len();
    let g = Guest::boot(&[(&data, false, "DATA-SERIAL-1"), (&iso, true, "")]);
    let out = g.expect("from-user-data# ");
    assert!(out.contains(kubevirt_demo_guest::BANNER), "{out}");
    assert!(
        out.contains("vda: 1048576 bytes, serial DATA-SERIAL-1"),
        "{out}"
    );
    assert!(
        out.contains(&format!("vdb: {iso_len} bytes, read-only")),
        "{out}"
    );
    assert!(
        out.contains("cloud-init: NoCloud data source on vdb, instance-id testvm.default"),
        "{out}"
    );
    assert!(out.contains("cloud-init: hostname from-user-data"), "{out}");
    assert!(out.contains("  | runcmd: [echo hello]"), "{out}");

    g.type_line("uname");
    g.expect("kubevirt-rs-demo from-user-data 1.0 x86_64");
    g.type_line("frobnicate");
    g.expect("frobnicate: command not found");
    g.type_line("poweroff");
    assert_eq!(
        g.vm.wait_timeout(Duration::from_secs(30)),
        Some(ExitReason::PowerOff),
        "{}",
        g.console.text()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reads_config_drive_metadata() {
    let dir = tempdir("configdrive");
    let yaml = r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: cd, namespace: ns1}
spec:
  domain:
    devices:
      disks: [{name: cloudinit, disk: {bus: virtio}}]
  volumes:
  - name: cloudinit
    cloudInitConfigDrive:
      userData: "#!/bin/sh\necho config-drive user data\n"
"##;
    let iso = cloud_init_iso(yaml, &dir);
    let g = Guest::boot(&[(&iso, true, "")]);
    let out = g.expect("# ");
    assert!(
        out.contains("cloud-init: ConfigDrive data source on vda"),
        "{out}"
    );
    assert!(out.contains("cloud-init: hostname cd"), "{out}");
    assert!(out.contains("  | echo config-drive user data"), "{out}");
    g.vm.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
