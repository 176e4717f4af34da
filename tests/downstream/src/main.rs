//! An operator-side program on kubevirt-api: build a VM, default and validate it as the cluster
//! will, and print it. The same code as the README's "Embed it" section.

use kubevirt_api::core::v1::{RunStrategy, VirtualMachine};
use kubevirt_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubevirt_api::kube::Resource;

fn main() {
    let mut vm = VirtualMachine::from_container_disk("fedora", "quay.io/containerdisks/fedora:41")
        .in_namespace("default")
        .run_strategy(RunStrategy::Always)
        .cores(2)
        .memory("2Gi")
        .pod_network_masquerade()
        .cloud_init_user_data("#cloud-config\npassword: fedora\nchpasswd: {expire: false}\n");
    kubevirt_api::defaults(&mut vm); // what upstream's mutating webhook stores
    let problems = kubevirt_api::validate(&vm); // its validating webhook: `path: message` each
    for p in &problems {
        eprintln!("{p}");
    }
    assert!(problems.is_empty());
    let meta: &ObjectMeta = vm.meta();
    println!(
        "{} {}",
        VirtualMachine::api_version(&()),
        meta.name.as_deref().unwrap_or_default()
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&vm).expect("a VM serialises")
    );
}
