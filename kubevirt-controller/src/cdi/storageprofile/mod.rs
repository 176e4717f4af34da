//! CDI's StorageProfiles (`cdi.kubevirt.io/v1beta1`, cluster-scoped): one per StorageClass, of
//! its name, whose status says how DataVolumes with `spec.storage` get claims of that class —
//! `claimPropertySets` (access modes with a volume mode; the first is the default),
//! `cloneStrategy` and `dataImportCronSourceFormat` — from what CDI knows of the class's
//! provisioner, with the profile's `spec` overriding (as upstream's storage profile
//! controller). A class whose provisioner CDI does not know gets an empty `claimPropertySets`:
//! DataVolumes of it must name their access modes.
//!
//! [`status_for`] is the whole decision as a pure function; [`controller`] keeps the profiles
//! (and their CRD, which kubevirt-rs installs itself) in step with the classes.

pub mod controller;

use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};

/// One access-mode/volume-mode combination claims of a class may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPropertySet {
    /// Access modes (`ReadWriteOnce`, ...).
    pub access_modes: Vec<String>,
    /// `Filesystem` or `Block`.
    pub volume_mode: String,
}

/// What a DataVolume takes from its class's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The profile's (and class's) name.
    pub name: String,
    /// The class's provisioner.
    pub provisioner: String,
    /// The claim property sets, default first.
    pub claim_property_sets: Vec<ClaimPropertySet>,
}

/// Annotation of the default StorageClass.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// What CDI knows of `provisioner`: its claim property sets and clone strategy.
pub fn known(provisioner: &str) -> Option<(Vec<ClaimPropertySet>, &'static str)> {
    let rwo = |mode: &str| ClaimPropertySet {
        access_modes: vec!["ReadWriteOnce".into()],
        volume_mode: mode.into(),
    };
    match provisioner {
        // Ours: a directory (Filesystem) or a loop device (Block) on one node; clones copy.
        crate::storage::PROVISIONER => Some((vec![rwo("Filesystem"), rwo("Block")], "copy")),
        // Upstream's table entries for node-local provisioners.
        "kubevirt.io.hostpath-provisioner"
        | "kubevirt.io/hostpath-provisioner"
        | "rancher.io/local-path" => Some((vec![rwo("Filesystem")], "copy")),
        "kubernetes.io/no-provisioner" => Some((vec![rwo("Filesystem")], "copy")),
        _ => None,
    }
}

fn sets_json(sets: &[ClaimPropertySet]) -> Value {
    Value::Array(
        sets.iter()
            .map(|s| json!({"accessModes": s.access_modes, "volumeMode": s.volume_mode}))
            .collect(),
    )
}

/// The status the profile of `class` should have, given the profile's `spec`.
pub fn status_for(class: &StorageClass, spec: &Value) -> Value {
    let name = class.metadata.name.clone().unwrap_or_default();
    let known = known(&class.provisioner);
    let sets = match spec.get("claimPropertySets").filter(|s| s.is_array()) {
        Some(s) => s.clone(),
        None => sets_json(known.as_ref().map_or(&[][..], |(s, _)| s)),
    };
    let clone = spec
        .get("cloneStrategy")
        .and_then(Value::as_str)
        .or(known.as_ref().map(|(_, c)| *c))
        .unwrap_or("copy");
    let format = spec
        .get("dataImportCronSourceFormat")
        .and_then(Value::as_str)
        .unwrap_or("pvc");
    json!({
        "storageClass": name,
        "provisioner": class.provisioner,
        "claimPropertySets": sets,
        "cloneStrategy": clone,
        "dataImportCronSourceFormat": format,
    })
}

/// The profile a StorageProfile object describes (from its status).
pub fn profile_of(object: &Value) -> Profile {
    let status = &object["status"];
    let sets = status["claimPropertySets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| ClaimPropertySet {
            access_modes: s["accessModes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            volume_mode: s["volumeMode"].as_str().unwrap_or("Filesystem").to_string(),
        })
        .collect();
    Profile {
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        provisioner: status["provisioner"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        claim_property_sets: sets,
    }
}

impl Profile {
    /// The access modes and volume mode for a claim that gave `access_modes` and `volume_mode`
    /// (either may be missing), as upstream fills them; an error naming the field when the
    /// profile cannot say.
    pub fn complete(
        &self,
        access_modes: Option<&[String]>,
        volume_mode: Option<&str>,
    ) -> Result<(Vec<String>, String), String> {
        let given = access_modes.filter(|m| !m.is_empty());
        if let (Some(m), Some(v)) = (given, volume_mode) {
            return Ok((m.to_vec(), v.to_string()));
        }
        let candidates: Vec<&ClaimPropertySet> = self
            .claim_property_sets
            .iter()
            .filter(|s| volume_mode.is_none_or(|v| s.volume_mode == v))
            .filter(|s| !s.access_modes.is_empty())
            .collect();
        match (given, candidates.first()) {
            (Some(m), Some(set)) => Ok((m.to_vec(), set.volume_mode.clone())),
            // Access modes without a volume mode and no set to take one from: Filesystem.
            (Some(m), None) => Ok((m.to_vec(), "Filesystem".into())),
            (None, Some(set)) => Ok((set.access_modes.clone(), set.volume_mode.clone())),
            (None, None) => Err(format!(
                "spec.storage.accessModes: not given, and StorageProfile {} (provisioner {:?}) has no claimPropertySets{} to take them from; set spec.storage.accessModes (and volumeMode), or the StorageProfile's spec.claimPropertySets",
                self.name,
                self.provisioner,
                volume_mode
                    .map(|v| format!(" for volumeMode {v}"))
                    .unwrap_or_default()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, provisioner: &str) -> StorageClass {
        StorageClass {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            provisioner: provisioner.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_local_class_offers_filesystem_then_block() {
        let s = status_for(&class("local", crate::storage::PROVISIONER), &json!({}));
        assert_eq!(
            s["claimPropertySets"],
            json!([{"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"},
                   {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block"}])
        );
        assert_eq!(s["storageClass"], "local");
        assert_eq!(s["cloneStrategy"], "copy");
        assert_eq!(s["dataImportCronSourceFormat"], "pvc");
        let p = profile_of(&json!({"metadata": {"name": "local"}, "status": s}));
        assert_eq!(
            p.complete(None, None).unwrap(),
            (vec!["ReadWriteOnce".to_string()], "Filesystem".to_string())
        );
        assert_eq!(p.complete(None, Some("Block")).unwrap().1, "Block");
    }

    #[test]
    fn the_spec_wins_and_an_unknown_provisioner_has_no_sets() {
        let spec = json!({"claimPropertySets": [{"accessModes": ["ReadWriteMany"], "volumeMode": "Block"}],
                          "cloneStrategy": "snapshot"});
        let s = status_for(&class("fast", "example.com/csi"), &spec);
        assert_eq!(s["claimPropertySets"], spec["claimPropertySets"]);
        assert_eq!(s["cloneStrategy"], "snapshot");
        let s = status_for(&class("fast", "example.com/csi"), &json!({}));
        assert_eq!(s["claimPropertySets"], json!([]));
        let p = profile_of(&json!({"metadata": {"name": "fast"}, "status": s}));
        let e = p.complete(None, None).unwrap_err();
        assert!(
            e.starts_with("spec.storage.accessModes: not given, and StorageProfile fast"),
            "{e}"
        );
        let rwx = ["ReadWriteMany".to_string()];
        assert_eq!(
            p.complete(Some(&rwx), None).unwrap(),
            (rwx.to_vec(), "Filesystem".to_string())
        );
    }

    proptest::proptest! {
        #[test]
        fn any_profile_object_reads_without_panicking(s in "\\PC{0,40}") {
            let v = serde_json::from_str::<Value>(&s).unwrap_or(Value::String(s));
            let p = profile_of(&json!({"status": v}));
            let _ = p.complete(None, None);
        }
    }
}
