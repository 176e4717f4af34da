//! Arbitrary VirtualMachines survive JSON and YAML unchanged, including strings YAML would otherwise
//! read as other types ("yes", "null", "1e3", "0x10", ": ") and integers only unsigned types hold.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubevirt_api::codec::{documents_from_yaml, to_yaml};
use kubevirt_api::core::v1::{
    CPU, ContainerDiskSource, Devices, Disk, DiskTarget, DomainSpec, Interface,
    InterfaceMasquerade, Memory, Network, PodNetwork, VirtualMachine, VirtualMachineInstanceSpec,
    VirtualMachineInstanceTemplateSpec, VirtualMachineSpec, Volume,
};
use kubevirt_api::object::Object;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,20}",
        Just("yes".to_string()),
        Just("null".to_string()),
        Just("~".to_string()),
        Just("1e3".to_string()),
        Just("0x10".to_string()),
        Just("a: b".to_string()),
        Just("- item".to_string()),
        Just("#hash".to_string()),
        Just("".to_string()),
        "\\PC{0,16}",
    ]
}

prop_compose! {
    fn arb_vm()(
        name in "[a-z][a-z0-9-]{0,30}",
        labels in prop::collection::btree_map("[a-z]{1,8}", tricky_string(), 0..4),
        annotations in prop::collection::btree_map("[a-z./]{1,12}", tricky_string(), 0..3),
        // Known strategies and values upstream does not define (kept as `Other`).
        run_strategy in prop::option::of(prop_oneof![Just("Always".to_string()), Just("Halted".to_string()), tricky_string()]),
        cores in prop::option::of(any::<u32>()),
        memory in prop::option::of((1u32..65536).prop_map(|m| format!("{m}Mi"))),
        disks in prop::collection::vec(("[a-z]{1,8}", prop::option::of(any::<u64>()), prop::option::of(tricky_string())), 0..4),
        masquerade in any::<bool>(),
        autoattach in prop::option::of(any::<bool>()),
    ) -> VirtualMachine {
        let volumes = disks.iter().map(|(n, _, _)| Volume {
            name: n.clone(),
            container_disk: Some(ContainerDiskSource { image: format!("registry.example/{n}:latest"), ..Default::default() }),
            ..Default::default()
        }).collect();
        let disks = disks.into_iter().map(|(n, boot_order, serial)| Disk {
            name: n,
            boot_order,
            serial,
            disk: Some(DiskTarget { bus: Some("virtio".into()), ..Default::default() }),
            ..Default::default()
        }).collect();
        let interfaces = masquerade.then(|| vec![Interface {
            name: "default".into(), masquerade: Some(InterfaceMasquerade {}), ..Default::default()
        }]);
        let networks = masquerade.then(|| vec![Network { name: "default".into(), pod: Some(PodNetwork::default()), ..Default::default() }]);
        VirtualMachine {
            metadata: ObjectMeta {
                name: Some(name),
                labels: (!labels.is_empty()).then_some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..Default::default()
            },
            spec: VirtualMachineSpec {
                run_strategy: run_strategy.map(Into::into),
                template: VirtualMachineInstanceTemplateSpec {
                    metadata: None,
                    spec: Some(VirtualMachineInstanceSpec {
                        domain: DomainSpec {
                            cpu: cores.map(|c| CPU { cores: Some(c), ..Default::default() }),
                            memory: memory.map(|m| Memory { guest: Some(Quantity(m)), ..Default::default() }),
                            devices: Devices { disks: Some(disks), interfaces, autoattach_pod_interface: autoattach, ..Default::default() },
                            ..Default::default()
                        },
                        networks,
                        volumes: Some(volumes),
                        node_selector: Some(BTreeMap::new()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            status: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn vm_round_trips_through_json(vm in arb_vm()) {
        let text = serde_json::to_string(&vm).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        match Object::decode(&value).unwrap() {
            Object::VirtualMachine(back) => prop_assert_eq!(*back, vm),
            other => prop_assert!(false, "decoded as {}", other.kind()),
        }
    }

    #[test]
    fn vm_round_trips_through_yaml(vm in arb_vm()) {
        let text = to_yaml(&vm).unwrap();
        let docs = documents_from_yaml(&text).unwrap();
        prop_assert_eq!(docs.len(), 1);
        match Object::decode(&docs[0].value).unwrap() {
            Object::VirtualMachine(back) => prop_assert_eq!(*back, vm, "yaml was:\n{}", text),
            other => prop_assert!(false, "decoded as {}", other.kind()),
        }
    }
}
