//! Objects the snapshot tests share, written as the YAML a user would apply.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kubevirt_api::core::v1::VirtualMachine;
use serde_json::json;

use super::volumes::SnapshotClass;

/// A VM `vm1` (uid `vm-uid`) with a DataVolume disk `root` (template `vm1-root`), a claim disk
/// `data` (claim `data-claim`), a containerDisk and a cloud-init volume.
pub fn vm() -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm1", "namespace": "ns", "uid": "vm-uid",
                     "labels": {"app": "demo"}, "resourceVersion": "7"},
        "spec": {
            "runStrategy": "Always",
            "dataVolumeTemplates": [{
                "metadata": {"name": "vm1-root"},
                "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "64Mi"}}}}
            }],
            "template": {"spec": {
                "domain": {"devices": {"disks": [
                    {"name": "root", "disk": {"bus": "virtio"}},
                    {"name": "data", "disk": {"bus": "virtio"}},
                    {"name": "boot", "disk": {"bus": "virtio"}},
                    {"name": "init", "disk": {"bus": "virtio"}}
                ]}, "memory": {"guest": "128Mi"}},
                "volumes": [
                    {"name": "root", "dataVolume": {"name": "vm1-root"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-claim"}},
                    {"name": "boot", "containerDisk": {"image": "demo"}},
                    {"name": "init", "cloudInitNoCloud": {"userData": "#cloud-config"}}
                ]
            }}
        }
    }))
    .expect("the VM decodes")
}

/// A bound claim `name` of class `class`.
pub fn claim(name: &str, class: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"),
                     "resourceVersion": "3",
                     "annotations": {"pv.kubernetes.io/bind-completed": "yes", "keep": "me"}},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "volumeName": format!("pv-{name}"),
                 "resources": {"requests": {"storage": "64Mi"}}},
        "status": {"phase": "Bound"}
    }))
    .expect("the claim decodes")
}

/// StorageClass `name` of `provisioner`.
pub fn storage_class(name: &str, provisioner: &str) -> StorageClass {
    StorageClass {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        provisioner: provisioner.into(),
        ..Default::default()
    }
}

/// Both claims of [`vm`], of class `local`.
pub fn claims() -> BTreeMap<String, PersistentVolumeClaim> {
    [claim("vm1-root", "local"), claim("data-claim", "local")]
        .into_iter()
        .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
        .collect()
}

/// Class `local` of the local driver, class `other` of another.
pub fn storage_classes() -> BTreeMap<String, StorageClass> {
    [
        storage_class("local", "kubevirt-rs.io/local-volume"),
        storage_class("other", "example.com/other"),
    ]
    .into_iter()
    .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
    .collect()
}

/// The local driver's VolumeSnapshotClass.
pub fn snapshot_classes() -> Vec<SnapshotClass> {
    vec![SnapshotClass {
        name: "local-snapshots".into(),
        driver: "kubevirt-rs.io/local-volume".into(),
        default: true,
    }]
}
