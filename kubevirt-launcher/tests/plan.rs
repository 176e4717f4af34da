//! Launch plans from real documents: upstream's kernel-boot VMI and its vm-cirros (firmware boot)
//! plan; upstream examples that use what the launcher does not support yet are refused with
//! every unsupported field named.

use kubevirt_api::codec::documents_from_yaml;
use kubevirt_api::object::Object;
use kubevirt_api::validation::ErrorKind;
use kubevirt_launcher::plan::{
    BootPlan, CacheMode, DiskSource, ErrorPolicy, LaunchPlan, PlanErrors, from_document,
};

fn plan_of(yaml: &str) -> Result<LaunchPlan, PlanErrors> {
    let doc = documents_from_yaml(yaml).expect("yaml").remove(0);
    from_document(&Object::decode(&doc.value).expect("decode"))
}

fn fixture(name: &str) -> String {
    let path = kubevirt_testsupport::fixture(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn upstream_kernel_boot_vmi_plans() {
    let plan = plan_of(&fixture("kubevirt-examples-vmi-kernel-boot.yaml")).expect("plan");
    assert_eq!(plan.memory_bytes, 1 << 30);
    assert_eq!(plan.cpu.vcpus(), 1);
    let kb = plan.kernel_boot().expect("direct kernel boot");
    assert_eq!(kb.kernel_path.as_deref(), Some("/boot/vmlinuz-virt"));
    assert_eq!(kb.cmdline, "console=ttyS0");
    assert_eq!(plan.grace_period.as_secs(), 0);
    assert!(plan.serial_console);
}

#[test]
fn upstream_examples_needing_more_are_refused_with_every_field_named() {
    let err = plan_of(&fixture("kubevirt-examples-vmi-gpu.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.domain.devices.gpus: not supported"),
        "{err}"
    );
    assert!(
        !err.contains("spec.domain.firmware"),
        "a disk-booted VMI boots through firmware: {err}"
    );
    let err = plan_of(&fixture("kubevirt-examples-vmi-windows.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.domain.features"),
        "Hyper-V features are named: {err}"
    );
}

const DEMO: &str = r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: demo, namespace: lab}
spec:
  runStrategy: Always
  template:
    spec:
      domain:
        cpu: {sockets: 1, cores: 2, threads: 1, features: [{name: pcid, policy: disable}]}
        memory: {guest: 64Mi}
        firmware:
          serial: abc
          kernelBoot: {container: {image: example/demo:1, kernelPath: /boot/guest.elf}, kernelArgs: "console=ttyS0"}
        devices:
          rng: {}
          disks:
          - {name: root, disk: {bus: virtio}, cache: writeback, bootOrder: 1}
          - {name: scratch, disk: {bus: virtio}, serial: SCRATCH1}
          - {name: cloudinit, disk: {bus: virtio}}
          interfaces: [{name: default, masquerade: {}, ports: [{port: 22}]}]
      networks: [{name: default, pod: {}}]
      volumes:
      - {name: root, containerDisk: {image: example/disk:1}}
      - {name: scratch, emptyDisk: {capacity: 16Mi}}
      - {name: cloudinit, cloudInitNoCloud: {userData: "#cloud-config\n"}}
"##;

/// The seed's vm-cirros (a VirtualMachine, with its apiVersion): a containerDisk and a
/// cloud-init disk, no kernelBoot and no bootloader, so it boots through SeaBIOS.
#[test]
fn upstream_vm_cirros_plans_a_bios_boot() {
    let plan = plan_of(&fixture("kubevirt-examples-vm-cirros.yaml")).expect("plan");
    assert_eq!(plan.boot, BootPlan::Bios);
    assert!(plan.kernel_boot().is_none());
    assert_eq!(plan.memory_bytes, 128 << 20);
    assert_eq!(plan.disks.len(), 2);
    assert!(matches!(
        &plan.disks[0].source,
        DiskSource::ContainerDisk { image, .. } if image == "registry:5000/kubevirt/cirros-container-disk-demo:devel"
    ));
    assert!(matches!(
        plan.disks[1].source,
        DiskSource::CloudInitNoCloud(_)
    ));
    assert!(
        plan.boot_disks().is_empty(),
        "no bootOrder: the firmware's own order"
    );
}

const FIRMWARE_VMI: &str = r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: fw, namespace: default}
spec:
  domain:
    memory: {guest: 64Mi}
    firmware: {bootloader: BOOTLOADER}
    devices:
      disks:
      - {name: data, disk: {bus: virtio}}
      - {name: root, disk: {bus: virtio}, bootOrder: 2}
      - {name: rescue, disk: {bus: virtio}, bootOrder: 1}
  volumes:
  - {name: data, emptyDisk: {capacity: 1Mi}}
  - {name: root, containerDisk: {image: example/root:1}}
  - {name: rescue, containerDisk: {image: example/rescue:1}}
"##;

/// `bootloader.bios` is SeaBIOS, `bootloader.efi` with `secureBoot: false` OVMF; secure boot
/// (upstream's default for efi) and a persistent NVRAM are refused naming their fields; the
/// disks' `bootOrder` becomes the firmware's boot order.
#[test]
fn the_bootloader_picks_the_firmware_and_boot_order_reaches_it() {
    let bios = plan_of(&FIRMWARE_VMI.replace("BOOTLOADER", "{bios: {useSerial: true}}")).unwrap();
    assert_eq!(bios.boot, BootPlan::Bios);
    let names: Vec<&str> = bios.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["rescue", "root", "data"]);
    assert_eq!(bios.boot_disks(), [0, 1]);
    let efi = plan_of(&FIRMWARE_VMI.replace("BOOTLOADER", "{efi: {secureBoot: false}}")).unwrap();
    assert_eq!(efi.boot, BootPlan::Efi);
    for (bootloader, field) in [
        (
            "{efi: {}}",
            "spec.domain.firmware.bootloader.efi.secureBoot",
        ),
        (
            "{efi: {secureBoot: true}}",
            "spec.domain.firmware.bootloader.efi.secureBoot",
        ),
        (
            "{efi: {secureBoot: false, persistent: true}}",
            "spec.domain.firmware.bootloader.efi.persistent",
        ),
    ] {
        let err = plan_of(&FIRMWARE_VMI.replace("BOOTLOADER", bootloader)).unwrap_err();
        assert!(
            err.0.iter().any(|e| e.path.to_string() == field),
            "{bootloader}: {field} named in {err}"
        );
    }
}

#[test]
fn a_vm_template_maps_field_by_field() {
    let plan = plan_of(DEMO).expect("plan");
    assert_eq!(
        (plan.name.as_str(), plan.namespace.as_str()),
        ("demo", "lab")
    );
    assert_eq!(plan.cpu.vcpus(), 2);
    assert_eq!(plan.memory_bytes, 64 << 20);
    assert_eq!(plan.disabled_cpu_features, ["pcid"]);
    assert_eq!(plan.firmware_serial.as_deref(), Some("abc"));
    assert!(plan.rng);
    assert_eq!(plan.disks.len(), 3);
    assert_eq!(
        (plan.disks[0].cache, plan.disks[0].boot_order),
        (CacheMode::Writeback, Some(1))
    );
    assert_eq!(
        plan.disks[1].source,
        DiskSource::EmptyDisk { capacity: 16 << 20 }
    );
    assert_eq!(plan.disks[1].serial.as_deref(), Some("SCRATCH1"));
    assert!(matches!(
        plan.disks[2].source,
        DiskSource::CloudInitNoCloud(_)
    ));
    assert!(plan.disks[2].readonly, "cloud-init disks are read-only");
    let net = plan.network.expect("network");
    assert_eq!(net.ports, [("TCP".to_string(), 22)]);
}

#[test]
fn every_problem_is_reported_at_once_with_paths_into_the_template() {
    let bad = DEMO
        .replace("bus: virtio}, cache: writeback", "bus: scsi}")
        .replace("masquerade: {}", "bridge: {}")
        .replace("policy: disable", "policy: require")
        .replace(
            "memory: {guest: 64Mi}",
            "memory: {guest: 64Mi, hugepages: {pageSize: 2Mi}}",
        );
    let err = plan_of(&bad).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "spec.template.spec.domain.devices.disks[0].disk.bus",
        "spec.template.spec.domain.devices.interfaces[0].ports",
        "spec.template.spec.domain.cpu.features[0].policy",
        "spec.template.spec.domain.memory.hugepages",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
}

/// An invalid document is refused by kubevirt_api's validation, the same rules and messages the
/// API server applies, before the launcher looks at what it supports.
#[test]
fn invalid_documents_are_refused_by_the_api_validation() {
    let err = plan_of(&DEMO.replace("cache: writeback", "cache: unsafe")).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(
        err.0[0].path.as_str(),
        "spec.template.spec.domain.devices.disks[0].cache"
    );
    assert_eq!(err.0[0].kind, ErrorKind::NotSupported);
    let err = plan_of(&DEMO.replace(
        "masquerade: {}, ports",
        "masquerade: {}, macAddress: \"02:00:00:00:00\", ports",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.template.spec.domain.devices.interfaces[0].macAddress")
            && err.contains("is not a MAC address"),
        "{err}"
    );
}

/// `errorPolicy`: upstream's default `stop` (the VM pauses on a disk error), the value given,
/// and an unknown one refused at its path.
#[test]
fn a_disks_error_policy_is_stop_by_default_or_as_given() {
    let plan = plan_of(DEMO).expect("plan");
    assert!(
        plan.disks
            .iter()
            .all(|d| d.error_policy == ErrorPolicy::Stop)
    );
    let given = DEMO.replace(
        "cache: writeback,",
        "cache: writeback, errorPolicy: enospace,",
    );
    assert_ne!(given, DEMO, "the demo's first disk line changed");
    let plan = plan_of(&given).expect("plan");
    assert_eq!(plan.disks[0].error_policy, ErrorPolicy::Enospace);
    let err = plan_of(&DEMO.replace("cache: writeback,", "cache: writeback, errorPolicy: pause,"))
        .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(
        err.0[0].path.as_str(),
        "spec.template.spec.domain.devices.disks[0].errorPolicy",
        "{err}"
    );
}

/// The pod interface a VMI gets by default is the one kubevirt-rs provides (masquerade), as the
/// API server defaults it.
#[test]
fn the_default_pod_interface_is_masquerade() {
    let auto = DEMO
        .replace(
            "          interfaces: [{name: default, masquerade: {}, ports: [{port: 22}]}]\n",
            "",
        )
        .replace("      networks: [{name: default, pod: {}}]\n", "");
    let plan = plan_of(&auto).expect("plan");
    assert_eq!(plan.network.expect("the pod network").name, "default");
    assert_eq!(
        plan.grace_period.as_secs(),
        30,
        "upstream's default grace period"
    );
}

#[test]
fn boot_order_decides_the_attach_order_and_must_be_unique() {
    // scratch boots first, root second, cloud-init (no bootOrder) last.
    let ordered = DEMO
        .replace("serial: SCRATCH1}", "serial: SCRATCH1, bootOrder: 1}")
        .replace(
            "cache: writeback, bootOrder: 1}",
            "cache: writeback, bootOrder: 2}",
        );
    let plan = plan_of(&ordered).expect("plan");
    let names: Vec<&str> = plan.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["scratch", "root", "cloudinit"]);
    let twice = DEMO.replace("serial: SCRATCH1}", "serial: SCRATCH1, bootOrder: 1}");
    let err = plan_of(&twice).unwrap_err().to_string();
    assert!(
        err.contains("spec.template.spec.domain.devices.disks[1].bootOrder")
            && err.contains("already used by"),
        "{err}"
    );
    let zero = DEMO.replace("bootOrder: 1}", "bootOrder: 0}");
    let err = plan_of(&zero).unwrap_err().to_string();
    assert!(
        err.contains(
            "spec.template.spec.domain.devices.disks[0].bootOrder: bootOrder must be 1 or more"
        ),
        "validation's own rule and message: {err}"
    );
}

#[test]
fn cpu_topology_is_kept_or_refused_with_the_reason() {
    let plan = plan_of(&DEMO.replace(
        "sockets: 1, cores: 2, threads: 1",
        "sockets: 2, cores: 3, threads: 2",
    ))
    .expect("plan");
    let vmm = plan.cpu;
    assert_eq!(
        (vmm.sockets, vmm.cores, vmm.threads, vmm.vcpus()),
        (2, 3, 2, 12)
    );
    // 3 sockets of 65 cores would need APIC IDs above 254.
    let err = plan_of(&DEMO.replace(
        "sockets: 1, cores: 2, threads: 1",
        "sockets: 3, cores: 65, threads: 1",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.template.spec.domain.cpu") && err.contains("above 254"),
        "{err}"
    );
}

#[test]
fn an_unknown_cpu_feature_is_refused_at_its_index() {
    let err = plan_of(&DEMO.replace(
        "features: [{name: pcid, policy: disable}]",
        "features: [{name: pcid, policy: disable}, {name: warp-drive, policy: disable}]",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("spec.template.spec.domain.cpu.features[1].name")
            && err.contains("warp-drive"),
        "{err}"
    );
}

#[test]
fn firmware_uuid_is_parsed_or_refused_with_its_path() {
    let with = |uuid: &str| {
        DEMO.replace(
            "          serial: abc",
            &format!("          serial: abc\n          uuid: \"{uuid}\""),
        )
    };
    let plan = plan_of(&with("5E6A2B10-3F7E-4F57-9D55-1B2B1F0C9A11")).expect("plan");
    assert_eq!(
        plan.firmware_uuid,
        Some([
            0x5e, 0x6a, 0x2b, 0x10, 0x3f, 0x7e, 0x4f, 0x57, 0x9d, 0x55, 0x1b, 0x2b, 0x1f, 0x0c,
            0x9a, 0x11
        ])
    );
    let err = plan_of(&with("not-a-uuid")).unwrap_err().to_string();
    assert!(err.contains("spec.domain.firmware.uuid"), "{err}");
}

/// A claim's capacity reaches the plan from the VMI's status (upstream's
/// `volumeStatus[].persistentVolumeClaimInfo.capacity`): the size of the `disk.img` the launcher
/// creates on a Filesystem claim without one.
#[test]
fn a_claims_capacity_comes_from_the_vmis_volume_status() {
    let vmi = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: c}
spec:
  domain:
    devices:
      disks: [{name: data, disk: {bus: virtio}}, {name: other, disk: {bus: virtio}}]
    resources: {requests: {memory: 128Mi}}
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: pvc-data}}
  - {name: other, dataVolume: {name: dv-other}}
status:
  volumeStatus:
  - {name: data, target: vda, persistentVolumeClaimInfo: {claimName: pvc-data, capacity: {storage: 2Gi}}}
"#;
    let plan = plan_of(vmi).expect("plan");
    assert_eq!(
        plan.disks[0].source,
        DiskSource::PersistentVolumeClaim {
            claim: "pvc-data".into(),
            capacity: Some(2 << 30)
        }
    );
    assert_eq!(
        plan.disks[1].source,
        DiskSource::DataVolume {
            name: "dv-other".into(),
            capacity: None
        }
    );
}
