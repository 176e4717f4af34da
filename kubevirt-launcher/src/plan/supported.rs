//! What the launcher supports, as field-path patterns over a VMI spec. Every field a spec sets
//! outside these patterns is reported by path: nothing is silently ignored.

use kubevirt_api::path::FieldPath;
use serde_json::Value;

/// Supported paths below `spec`. `[]` matches any list index; a trailing `.*` matches everything
/// below. Scheduling fields are the node's business and accepted here.
const SUPPORTED: &[&str] = &[
    "domain.cpu.cores",
    "domain.cpu.sockets",
    "domain.cpu.threads",
    "domain.cpu.model",
    "domain.cpu.features[].name",
    "domain.cpu.features[].policy",
    "domain.memory.guest",
    "domain.resources.requests.*",
    "domain.resources.limits.*",
    "domain.resources.overcommitGuestOverhead",
    "domain.machine.type",
    "domain.firmware.uuid",
    "domain.firmware.serial",
    "domain.firmware.kernelBoot.kernelArgs",
    "domain.firmware.kernelBoot.container.image",
    "domain.firmware.kernelBoot.container.kernelPath",
    "domain.firmware.kernelBoot.container.initrdPath",
    "domain.firmware.kernelBoot.container.imagePullPolicy",
    "domain.firmware.kernelBoot.container.imagePullSecret",
    "domain.firmware.bootloader.bios.useSerial",
    "domain.firmware.bootloader.efi.secureBoot",
    "domain.firmware.bootloader.efi.persistent",
    "domain.devices.disks[].name",
    "domain.devices.disks[].disk.bus",
    "domain.devices.disks[].disk.readonly",
    "domain.devices.disks[].bootOrder",
    "domain.devices.disks[].serial",
    "domain.devices.disks[].cache",
    "domain.devices.disks[].errorPolicy",
    "domain.devices.interfaces[].name",
    "domain.devices.interfaces[].masquerade",
    "domain.devices.interfaces[].bridge",
    "domain.devices.interfaces[].model",
    "domain.devices.interfaces[].macAddress",
    "domain.devices.interfaces[].ports[].*",
    "domain.devices.rng",
    "domain.devices.autoattachSerialConsole",
    "domain.devices.logSerialConsole",
    "domain.devices.autoattachPodInterface",
    "domain.devices.autoattachGraphicsDevice",
    "domain.devices.autoattachMemBalloon",
    "domain.devices.autoattachInputDevice",
    "domain.devices.autoattachVSOCK",
    "volumes[].name",
    "volumes[].containerDisk.*",
    "volumes[].persistentVolumeClaim.*",
    "volumes[].dataVolume.name",
    "volumes[].emptyDisk.capacity",
    "volumes[].cloudInitNoCloud.*",
    "volumes[].cloudInitConfigDrive.*",
    "volumes[].hostDisk.*",
    "volumes[].configMap.*",
    "volumes[].secret.*",
    "networks[].name",
    "networks[].pod.*",
    "terminationGracePeriodSeconds",
    "hostname",
    "subdomain",
    "architecture",
    "nodeSelector.*",
    "affinity.*",
    "tolerations[].*",
    "topologySpreadConstraints[].*",
    "schedulerName",
    "priorityClassName",
    "evictionStrategy",
    "startStrategy",
    "dnsPolicy",
    "dnsConfig.*",
];

/// Auto-attach switches the launcher cannot honour when turned on (what they would attach does not
/// exist yet); off or unset is fine.
pub(super) const NOT_WHEN_TRUE: &[&str] = &[
    "domain.devices.autoattachGraphicsDevice",
    "domain.devices.autoattachMemBalloon",
    "domain.devices.autoattachInputDevice",
    "domain.devices.autoattachVSOCK",
];

fn matches(pattern: &str, path: &[String]) -> bool {
    let mut segs = pattern.split('.').flat_map(|s| {
        // "disks[]" is the field "disks" then any index.
        match s.strip_suffix("[]") {
            Some(f) => vec![f, "[]"],
            None => vec![s],
        }
    });
    for p in path {
        match segs.next() {
            Some("*") => return true,
            Some("[]") if p.starts_with('[') => {}
            Some(s) if s == p => {}
            _ => return false,
        }
    }
    // The path ends at or above the pattern: an object holding supported fields.
    true
}

/// Every field set in `spec` (a VMI spec as JSON, found at `base`) that no pattern supports; each
/// unsupported subtree is reported once, at its top.
pub fn unsupported(spec: &Value, base: &FieldPath) -> Vec<FieldPath> {
    let mut out = Vec::new();
    walk(spec, &mut Vec::new(), base, &mut out);
    out
}

fn walk(v: &Value, segs: &mut Vec<String>, at: &FieldPath, out: &mut Vec<FieldPath>) {
    if !segs.is_empty() && !SUPPORTED.iter().any(|p| matches(p, segs)) {
        out.push(at.clone());
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if child.is_null() {
                    continue;
                }
                segs.push(k.clone());
                walk(child, segs, &at.field(k), out);
                segs.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                segs.push(format!("[{i}]"));
                walk(child, segs, &at.index(i), out);
                segs.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_each_unsupported_subtree_once() {
        let spec = json!({"domain": {"devices": {"disks": [{"name": "a", "disk": {"bus": "virtio"}, "io": "native"}],
            "gpus": [{"name": "g", "deviceName": "x"}]}, "memory": {"guest": "1Gi", "hugepages": {"pageSize": "2Mi"}}},
            "volumes": [{"name": "a", "containerDisk": {"image": "x", "path": "/disk"}}], "nodeSelector": {"a": "b"}});
        let mut found: Vec<String> = unsupported(&spec, &FieldPath::root())
            .iter()
            .map(|p| p.to_string())
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "domain.devices.disks[0].io",
                "domain.devices.gpus",
                "domain.memory.hugepages"
            ]
        );
    }

    #[test]
    fn empty_objects_at_supported_places_are_fine() {
        let spec = json!({"domain": {"devices": {"rng": {}, "interfaces": [{"name": "default", "masquerade": {}}]}},
            "networks": [{"name": "default", "pod": {}}]});
        let root = FieldPath::root();
        assert!(unsupported(&spec, &root).is_empty());
        assert_eq!(
            unsupported(
                &json!({"domain": {"devices": {"interfaces": [{"name": "d", "sriov": {}}]}}}),
                &root.field("spec")
            ),
            [root.field("spec.domain.devices.interfaces[0].sriov")]
        );
    }
}
