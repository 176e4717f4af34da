//! The three CRDs as the external-snapshotter ships them: derived schemas plus upstream's CEL
//! rules and the `deletionPolicy` enumeration.

use super::v1::{DeletionPolicy, VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent};
use crate::crd::cel::locate;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::crd::CustomResourceExt;
use serde_json::{Value, json};

/// One CEL rule: where (property names from the root), the rule and its message.
type Rule = (&'static [&'static str], &'static str, &'static str);

const SNAPSHOT_RULES: &[Rule] = &[
    (
        &["spec", "source"],
        "(has(self.volumeSnapshotContentName) && !has(self.persistentVolumeClaimName)) || (!has(self.volumeSnapshotContentName) && has(self.persistentVolumeClaimName))",
        "exactly one of volumeSnapshotContentName and persistentVolumeClaimName must be set",
    ),
    (
        &["spec", "source"],
        "!has(oldSelf.persistentVolumeClaimName) || has(self.persistentVolumeClaimName)",
        "persistentVolumeClaimName is required once set",
    ),
    (
        &["spec", "source"],
        "!has(oldSelf.volumeSnapshotContentName) || has(self.volumeSnapshotContentName)",
        "volumeSnapshotContentName is required once set",
    ),
    (
        &["spec", "source", "persistentVolumeClaimName"],
        "self == oldSelf",
        "persistentVolumeClaimName is immutable",
    ),
    (
        &["spec", "source", "volumeSnapshotContentName"],
        "self == oldSelf",
        "volumeSnapshotContentName is immutable",
    ),
    (
        &["spec", "volumeSnapshotClassName"],
        "size(self) > 0",
        "volumeSnapshotClassName must not be the empty string when set",
    ),
];

const CONTENT_RULES: &[Rule] = &[
    (
        &["spec", "source"],
        "(has(self.volumeHandle) && !has(self.snapshotHandle)) || (!has(self.volumeHandle) && has(self.snapshotHandle))",
        "exactly one of volumeHandle and snapshotHandle must be set",
    ),
    (
        &["spec", "source"],
        "!has(oldSelf.volumeHandle) || has(self.volumeHandle)",
        "volumeHandle is required once set",
    ),
    (
        &["spec", "source"],
        "!has(oldSelf.snapshotHandle) || has(self.snapshotHandle)",
        "snapshotHandle is required once set",
    ),
    (
        &["spec", "source", "volumeHandle"],
        "self == oldSelf",
        "volumeHandle is immutable",
    ),
    (
        &["spec", "source", "snapshotHandle"],
        "self == oldSelf",
        "snapshotHandle is immutable",
    ),
    (
        &["spec", "volumeSnapshotRef"],
        "has(self.name) && has(self.__namespace__)",
        "both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set",
    ),
    (
        &["spec"],
        "!has(oldSelf.sourceVolumeMode) || has(self.sourceVolumeMode)",
        "sourceVolumeMode is required once set",
    ),
    (
        &["spec", "sourceVolumeMode"],
        "self == oldSelf",
        "sourceVolumeMode is immutable",
    ),
];

/// The `VolumeSnapshot`, `VolumeSnapshotContent` and `VolumeSnapshotClass` CRDs
/// (`snapshot.storage.k8s.io/v1`), as the external-snapshotter installs them on a real cluster.
pub fn volume_snapshot_crds() -> Vec<CustomResourceDefinition> {
    vec![
        finish(VolumeSnapshot::crd(), SNAPSHOT_RULES, &["spec"]),
        finish(VolumeSnapshotContent::crd(), CONTENT_RULES, &["spec"]),
        finish(VolumeSnapshotClass::crd(), &[], &[]),
    ]
}

/// Add the root's type meta, the CEL rules and the `deletionPolicy` enumeration (found under
/// `policy_at`) to a derived CRD.
fn finish(
    mut crd: CustomResourceDefinition,
    rules: &[Rule],
    policy_at: &[&str],
) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let Ok(mut value) = serde_json::to_value(&*schema) else {
            continue;
        };
        crate::crd::schema::type_meta(&mut value);
        for (at, rule, message) in rules {
            if let Some(node) = locate(&mut value, at) {
                let list = node
                    .as_object_mut()
                    .map(|o| o.entry("x-kubernetes-validations").or_insert(json!([])));
                if let Some(Value::Array(list)) = list {
                    list.push(json!({"rule": rule, "message": message}));
                }
            }
        }
        if let Some(policy) = locate(&mut value, policy_at)
            .and_then(|n| n.get_mut("properties"))
            .and_then(|p| p.get_mut("deletionPolicy"))
        {
            policy["enum"] = json!(DeletionPolicy::VALUES);
        }
        if let Ok(done) = serde_json::from_value(value) {
            *schema = done;
        }
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(crd: &CustomResourceDefinition) -> Value {
        let schema = crd.spec.versions[0].schema.as_ref().unwrap();
        serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn names_scopes_and_columns_are_upstreams() {
        let crds = volume_snapshot_crds();
        let summary: Vec<_> = crds
            .iter()
            .map(|c| {
                let v = &c.spec.versions[0];
                let columns: Vec<_> = v
                    .additional_printer_columns
                    .iter()
                    .flatten()
                    .map(|c| c.name.as_str())
                    .collect();
                (
                    c.metadata.name.clone().unwrap(),
                    c.spec.scope.clone(),
                    c.spec.names.short_names.clone().unwrap_or_default(),
                    v.subresources.is_some(),
                    columns,
                )
            })
            .collect();
        assert_eq!(
            summary[0],
            (
                "volumesnapshots.snapshot.storage.k8s.io".to_string(),
                "Namespaced".to_string(),
                vec!["vs".to_string()],
                true,
                vec![
                    "ReadyToUse",
                    "SourcePVC",
                    "SourceSnapshotContent",
                    "RestoreSize",
                    "SnapshotClass",
                    "SnapshotContent",
                    "CreationTime",
                    "Age"
                ]
            )
        );
        assert_eq!(
            summary[1],
            (
                "volumesnapshotcontents.snapshot.storage.k8s.io".to_string(),
                "Cluster".to_string(),
                vec!["vsc".to_string(), "vscs".to_string()],
                true,
                vec![
                    "ReadyToUse",
                    "RestoreSize",
                    "DeletionPolicy",
                    "Driver",
                    "VolumeSnapshotClass",
                    "VolumeSnapshot",
                    "VolumeSnapshotNamespace",
                    "Age"
                ]
            )
        );
        assert_eq!(
            summary[2],
            (
                "volumesnapshotclasses.snapshot.storage.k8s.io".to_string(),
                "Cluster".to_string(),
                vec!["vsclass".to_string(), "vsclasses".to_string()],
                false,
                vec!["Driver", "DeletionPolicy", "Age"]
            )
        );
    }

    #[test]
    fn class_fields_sit_on_the_root_and_policies_are_enumerated() {
        let crds = volume_snapshot_crds();
        let class = schema(&crds[2]);
        assert!(class["properties"]["driver"].is_object(), "{class}");
        assert!(class["properties"].get("spec").is_none(), "{class}");
        assert_eq!(
            class["properties"]["deletionPolicy"]["enum"],
            json!(["Delete", "Retain"])
        );
        let content = schema(&crds[1]);
        assert_eq!(
            content["properties"]["spec"]["properties"]["deletionPolicy"]["enum"],
            json!(["Delete", "Retain"])
        );
        let snapshot = schema(&crds[0]);
        let rules =
            &snapshot["properties"]["spec"]["properties"]["source"]["x-kubernetes-validations"];
        assert_eq!(rules.as_array().map(Vec::len), Some(3), "{snapshot}");
    }

    #[test]
    fn every_rule_finds_its_node() {
        let crds = volume_snapshot_crds();
        for (crd, rules) in [(&crds[0], SNAPSHOT_RULES), (&crds[1], CONTENT_RULES)] {
            let mut value = schema(crd);
            for (at, rule, _) in rules {
                assert!(locate(&mut value, at).is_some(), "{rule} at {at:?}");
            }
        }
    }
}
