//! `subresources.kubevirt.io` discovery: the group, each version's resource list, `version`.

use serde_json::{Value, json};

/// The API group.
pub const GROUP: &str = "subresources.kubevirt.io";
/// The served versions, preferred first (upstream serves v1alpha3 too, as virtctl may ask it).
pub const VERSIONS: &[&str] = &["v1", "v1alpha3"];

/// The subresources, their kinds and verbs.
const RESOURCES: &[(&str, &str, &[&str])] = &[
    ("virtualmachines/start", "VirtualMachine", &["update"]),
    ("virtualmachines/stop", "VirtualMachine", &["update"]),
    ("virtualmachines/restart", "VirtualMachine", &["update"]),
    (
        "virtualmachineinstances/pause",
        "VirtualMachineInstance",
        &["update"],
    ),
    (
        "virtualmachineinstances/unpause",
        "VirtualMachineInstance",
        &["update"],
    ),
    (
        "virtualmachineinstances/softreboot",
        "VirtualMachineInstance",
        &["update"],
    ),
    (
        "virtualmachineinstances/freeze",
        "VirtualMachineInstance",
        &["update"],
    ),
    (
        "virtualmachineinstances/unfreeze",
        "VirtualMachineInstance",
        &["update"],
    ),
    (
        "virtualmachineinstances/console",
        "VirtualMachineInstance",
        &["get"],
    ),
    (
        "virtualmachineinstances/vnc",
        "VirtualMachineInstance",
        &["get"],
    ),
    (
        "virtualmachineinstances/portforward",
        "VirtualMachineInstance",
        &["get"],
    ),
    ("virtualmachines/portforward", "VirtualMachine", &["get"]),
];

/// The `APIGroup` entry (for `/apis` and `/apis/subresources.kubevirt.io`).
pub fn group() -> Value {
    let versions: Vec<Value> = VERSIONS
        .iter()
        .map(|v| json!({"groupVersion": format!("{GROUP}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP,
        "versions": versions.clone(), "preferredVersion": versions[0]})
}

/// The `APIResourceList` of `version`.
pub fn resources(version: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(name, kind, verbs)| {
            json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{version}"), "resources": resources})
}

/// This server's version (upstream's `version.Info`).
pub fn version() -> Value {
    json!({
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION"), "-kubevirt-rs"),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "none (Rust)", "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

/// The architecture as Go names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
