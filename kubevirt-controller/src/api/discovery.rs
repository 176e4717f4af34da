//! `subresources.kubevirt.io` discovery: the group, each version's resource list, `version`.

use serde_json::{Value, json};

/// The API group.
pub const GROUP: &str = "subresources.kubevirt.io";
/// The served versions, preferred first (upstream serves v1alpha3 too, as virtctl may ask it).
pub const VERSIONS: &[&str] = &["v1", "v1alpha3"];

/// `virtualmachines/{name}/…` actions, each a PUT (verb `update`).
pub const VM_UPDATES: &[&str] = &["start", "stop", "restart", "migrate"];
/// `virtualmachineinstances/{name}/…` actions, each a PUT (verb `update`).
pub const VMI_UPDATES: &[&str] = &[
    "pause",
    "unpause",
    "softreboot",
    "freeze",
    "unfreeze",
    super::instance::MEMORY_SNAPSHOT,
];
/// `virtualmachineinstances/{name}/…` reads and streams, each a GET (verb `get`).
pub const VMI_GETS: &[&str] = &[
    "console",
    "vnc",
    "guestosinfo",
    "userlist",
    "filesystemlist",
];
/// The port-forward subresource, a GET on both kinds.
pub const PORT_FORWARD: &str = "portforward";

/// Every subresource this API serves: `(resource/subresource, kind, verb)`. The handlers accept
/// exactly the actions of the lists above, so discovery cannot miss one.
fn served() -> Vec<(String, &'static str, &'static str)> {
    let vm = |a: &str, verb| (format!("virtualmachines/{a}"), "VirtualMachine", verb);
    let vmi = |a: &str, verb| {
        (
            format!("virtualmachineinstances/{a}"),
            "VirtualMachineInstance",
            verb,
        )
    };
    VM_UPDATES
        .iter()
        .map(|a| vm(a, "update"))
        .chain(VMI_UPDATES.iter().map(|a| vmi(a, "update")))
        .chain(VMI_GETS.iter().map(|a| vmi(a, "get")))
        .chain([vmi(PORT_FORWARD, "get"), vm(PORT_FORWARD, "get")])
        .collect()
}

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
    let resources: Vec<Value> = served()
        .into_iter()
        .map(|(name, kind, verb)| {
            json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": [verb]})
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::instance::{MEMORY_SNAPSHOT, VmiAction};

    #[test]
    fn every_vmi_update_the_handler_takes_is_listed() {
        for a in VMI_UPDATES.iter().filter(|a| **a != MEMORY_SNAPSHOT) {
            assert!(
                VmiAction::parse(a).is_some(),
                "{a} is listed but not handled"
            );
        }
        for a in ["pause", "unpause", "softreboot", "freeze", "unfreeze"] {
            assert!(VMI_UPDATES.contains(&a), "{a} is handled but not listed");
        }
    }

    #[test]
    fn discovery_lists_each_subresource_once_with_its_verb() {
        let list = resources("v1");
        let names: Vec<(&str, &str)> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap(), r["verbs"][0].as_str().unwrap()))
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for want in [
            ("virtualmachineinstances/memorysnapshot", "update"),
            ("virtualmachineinstances/guestosinfo", "get"),
            ("virtualmachines/start", "update"),
            ("virtualmachines/portforward", "get"),
        ] {
            assert!(names.contains(&want), "{want:?} missing from {names:?}");
        }
    }
}
