//! Build a VirtualMachine in Rust the way an embedding operator would, apply upstream's defaults,
//! validate it, and print the YAML that `kubectl apply -f -` accepts.
//!
//! Run: `cargo run --example build_vm`

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubevirt_rs::api::codec::to_yaml;
use kubevirt_rs::api::core::v1::{
    CloudInitNoCloudSource, ContainerDiskSource, Devices, Disk, DiskTarget, DomainSpec, Interface,
    InterfaceMasquerade, Memory, Network, PodNetwork, VirtualMachine, VirtualMachineInstanceSpec,
    VirtualMachineInstanceTemplateSpec, VirtualMachineSpec, Volume,
};
use kubevirt_rs::api::defaults::{ClusterDefaults, apply};
use kubevirt_rs::api::object::Object;
use kubevirt_rs::api::validation::validate;
use std::process::ExitCode;

fn disk(name: &str) -> Disk {
    Disk {
        name: name.into(),
        disk: Some(DiskTarget {
            bus: Some("virtio".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn main() -> ExitCode {
    let mut vm = VirtualMachine::new(
        "fedora",
        VirtualMachineSpec {
            run_strategy: Some("Always".into()),
            template: VirtualMachineInstanceTemplateSpec {
                metadata: None,
                spec: Some(VirtualMachineInstanceSpec {
                    domain: DomainSpec {
                        memory: Some(Memory {
                            guest: Some(Quantity("1Gi".into())),
                            ..Default::default()
                        }),
                        devices: Devices {
                            disks: Some(vec![disk("root"), disk("cloudinit")]),
                            interfaces: Some(vec![Interface {
                                name: "default".into(),
                                masquerade: Some(InterfaceMasquerade {}),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                    networks: Some(vec![Network {
                        name: "default".into(),
                        pod: Some(PodNetwork::default()),
                        ..Default::default()
                    }]),
                    volumes: Some(vec![
                        Volume {
                            name: "root".into(),
                            container_disk: Some(ContainerDiskSource {
                                image: "quay.io/containerdisks/fedora:latest".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "cloudinit".into(),
                            cloud_init_no_cloud: Some(CloudInitNoCloudSource {
                                user_data: Some(
                                    "#cloud-config\npassword: fedora\nchpasswd: {expire: false}\n"
                                        .into(),
                                ),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
    );
    vm.metadata.namespace = Some("default".into());

    let mut object = Object::VirtualMachine(Box::new(vm));
    apply(&mut object, &ClusterDefaults::default());
    let errors = validate(&object);
    if !errors.is_empty() {
        for e in errors {
            eprintln!("{e}");
        }
        return ExitCode::FAILURE;
    }
    let value = match object.encode() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match to_yaml(&value) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
