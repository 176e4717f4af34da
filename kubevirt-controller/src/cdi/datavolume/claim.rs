//! The claim a DataVolume fills: named and namespaced as the DataVolume, owned by it, from
//! `spec.pvc` as written or from `spec.storage` completed as upstream's storage API does
//! (access and volume modes from the class's StorageProfile, else ReadWriteOnce and
//! Filesystem, and a Filesystem claim grown by the filesystem overhead so the
//! disk image gets the size asked for).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_api::quantity::bytes_of;
use thiserror::Error;

use crate::cdi::storageprofile::Profile;

/// Claims are sized in whole MiB.
const ALIGN: u64 = 1 << 20;

/// Why a DataVolume's claim cannot be made (said on the DataVolume; nothing is created).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClaimError {
    /// Neither or both of `spec.pvc` and `spec.storage`.
    #[error("spec: exactly one of spec.pvc and spec.storage must be set")]
    PvcOrStorage,
    /// No size.
    #[error("{0}: a size is required (e.g. storage: 10Gi)")]
    NoSize(&'static str),
    /// A size that is not a quantity.
    #[error("{field}: {reason}")]
    BadSize {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The class's StorageProfile cannot complete `spec.storage`.
    #[error("{0}")]
    Profile(String),
    /// A volume mode that is neither Filesystem nor Block.
    #[error("{field}: unsupported volume mode {mode:?} (Filesystem or Block)")]
    VolumeMode {
        /// The field.
        field: &'static str,
        /// The mode given.
        mode: String,
    },
}

/// The volume mode of a DataVolume's claim (`Filesystem` unless `Block`).
pub fn volume_mode(dv: &DataVolume) -> &str {
    dv.spec
        .pvc
        .as_ref()
        .and_then(|p| p.volume_mode.as_deref())
        .or_else(|| dv.spec.storage.as_ref()?.volume_mode.as_deref())
        .unwrap_or("Filesystem")
}

/// The size the DataVolume asks for, in bytes: the disk image's size for `spec.storage`, the
/// claim's for `spec.pvc`.
pub fn requested_bytes(dv: &DataVolume) -> Result<u64, ClaimError> {
    let (field, resources) = match (&dv.spec.pvc, &dv.spec.storage) {
        (Some(p), None) => ("spec.pvc.resources.requests.storage", p.resources.as_ref()),
        (None, Some(s)) => (
            "spec.storage.resources.requests.storage",
            s.resources.as_ref(),
        ),
        _ => return Err(ClaimError::PvcOrStorage),
    };
    let q = resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .ok_or(ClaimError::NoSize(field))?;
    match bytes_of(q) {
        Ok(0) => Err(ClaimError::NoSize(field)),
        Ok(b) => Ok(b),
        Err(e) => Err(ClaimError::BadSize {
            field,
            reason: e.to_string(),
        }),
    }
}

/// The claim for `dv`, or why there can be none. `source_size` is the size of the claim a
/// clone copies: a `spec.storage` without a size takes it, as upstream's storage API does.
pub fn for_data_volume(
    dv: &DataVolume,
    filesystem_overhead: f64,
    source_size: Option<u64>,
) -> Result<PersistentVolumeClaim, ClaimError> {
    for_data_volume_with(dv, filesystem_overhead, source_size, None)
}

/// [`for_data_volume`] with the StorageProfile of the claim's class: a `spec.storage` without
/// access modes or volume mode takes them from it (without a profile: ReadWriteOnce,
/// Filesystem).
pub fn for_data_volume_with(
    dv: &DataVolume,
    filesystem_overhead: f64,
    source_size: Option<u64>,
    profile: Option<&Profile>,
) -> Result<PersistentVolumeClaim, ClaimError> {
    // (bytes, whether they are the disk's size, to which a Filesystem claim adds its overhead)
    let (size, of_disk) = match (requested_bytes(dv), source_size) {
        (Ok(b), _) => (b, true),
        (Err(ClaimError::NoSize(_)), Some(b)) if dv.spec.storage.is_some() => (b, false),
        (Err(e), _) => return Err(e),
    };
    let spec = match (&dv.spec.pvc, &dv.spec.storage) {
        (Some(p), None) => {
            check_mode(p.volume_mode.as_deref(), "spec.pvc.volumeMode")?;
            p.clone()
        }
        (None, Some(s)) => {
            let (access_modes, mode) = match profile {
                Some(p) => p
                    .complete(s.access_modes.as_deref(), s.volume_mode.as_deref())
                    .map_err(ClaimError::Profile)?,
                None => (
                    s.access_modes
                        .clone()
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                    s.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                ),
            };
            let mode = mode.as_str();
            check_mode(Some(mode), "spec.storage.volumeMode")?;
            let bytes = if mode == "Filesystem" && of_disk {
                with_overhead(size, filesystem_overhead)
            } else {
                size
            };
            let mut requests = BTreeMap::new();
            requests.insert("storage".to_string(), Quantity(bytes.to_string()));
            PersistentVolumeClaimSpec {
                access_modes: Some(access_modes),
                volume_mode: Some(mode.to_string()),
                storage_class_name: s.storage_class_name.clone(),
                selector: s.selector.clone(),
                volume_name: s.volume_name.clone(),
                data_source: s.data_source.clone(),
                data_source_ref: s.data_source_ref.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(requests),
                    limits: None,
                }),
                ..Default::default()
            }
        }
        _ => return Err(ClaimError::PvcOrStorage),
    };
    let mut labels = dv.metadata.labels.clone().unwrap_or_default();
    labels.insert("app".into(), "containerized-data-importer".into());
    labels.insert("app.kubernetes.io/component".into(), "storage".into());
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: dv.metadata.name.clone(),
            namespace: dv.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner(dv)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// `dv` as the controlling owner of what it makes (its claim, its importer pod).
pub fn owner(dv: &DataVolume) -> OwnerReference {
    OwnerReference {
        api_version: DataVolume::api_version(&()).into_owned(),
        kind: DataVolume::kind(&()).into_owned(),
        name: dv.metadata.name.clone().unwrap_or_default(),
        uid: dv.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A Filesystem claim big enough that `size` bytes remain after the file system's share,
/// rounded up to whole MiB (upstream's `GetRequiredSpace`).
pub fn with_overhead(size: u64, overhead: f64) -> u64 {
    let overhead = if (0.0..1.0).contains(&overhead) {
        overhead
    } else {
        0.0
    };
    let grown = (size as f64 / (1.0 - overhead)).ceil() as u64;
    grown.max(size).div_ceil(ALIGN).saturating_mul(ALIGN)
}

fn check_mode(mode: Option<&str>, field: &'static str) -> Result<(), ClaimError> {
    match mode {
        None | Some("Filesystem" | "Block") => Ok(()),
        Some(other) => Err(ClaimError::VolumeMode {
            field,
            mode: other.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn dv(spec: serde_json::Value) -> DataVolume {
        serde_json::from_value(json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": "root", "namespace": "ns", "uid": "dv-uid", "labels": {"x": "y"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn size(c: &PersistentVolumeClaim) -> String {
        c.spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0
            .clone()
    }

    #[test]
    fn storage_api_fills_in_upstreams_defaults_and_overhead() {
        let d = dv(json!({"source": {"blank": {}},
                          "storage": {"resources": {"requests": {"storage": "1Gi"}}}}));
        let c = for_data_volume(&d, 0.055, None).unwrap();
        let spec = c.spec.as_ref().unwrap();
        assert_eq!(spec.access_modes.as_deref().unwrap(), ["ReadWriteOnce"]);
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(
            spec.storage_class_name, None,
            "the default class is the server's"
        );
        // 1 GiB / 0.945, rounded up to MiB.
        assert_eq!(size(&c), (1084 << 20).to_string());
        assert_eq!(c.metadata.name.as_deref(), Some("root"));
        assert_eq!(c.metadata.labels.as_ref().unwrap()["x"], "y");
        let o = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.uid.as_str()), ("DataVolume", "dv-uid"));
    }

    #[test]
    fn block_claims_get_the_size_asked_and_pvc_is_taken_as_written() {
        let d = dv(json!({"source": {"blank": {}},
            "storage": {"volumeMode": "Block", "storageClassName": "fast",
                        "resources": {"requests": {"storage": "1Gi"}}}}));
        let c = for_data_volume(&d, 0.055, None).unwrap();
        assert_eq!(size(&c), (1u64 << 30).to_string());
        assert_eq!(
            c.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("fast")
        );
        let d = dv(json!({"source": {"blank": {}},
            "pvc": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "500Mi"}}}}));
        let c = for_data_volume(&d, 0.055, None).unwrap();
        assert_eq!(size(&c), "500Mi");
        assert_eq!(volume_mode(&d), "Filesystem");
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = |spec| {
            for_data_volume(&dv(spec), 0.055, None)
                .unwrap_err()
                .to_string()
        };
        assert!(
            e(json!({"source": {"blank": {}}}))
                .contains("exactly one of spec.pvc and spec.storage")
        );
        assert!(
            e(json!({"storage": {}}))
                .contains("spec.storage.resources.requests.storage: a size is required")
        );
        assert!(
            e(json!({"pvc": {"resources": {"requests": {"storage": "lots"}}}}))
                .starts_with("spec.pvc.resources.requests.storage: quantity \"lots\"")
        );
        assert!(e(json!({"storage": {"volumeMode": "Tape", "resources": {"requests": {"storage": "1Gi"}}}}))
            .contains("spec.storage.volumeMode: unsupported volume mode \"Tape\""));
    }

    #[test]
    fn a_clone_without_a_size_takes_its_sources() {
        let d =
            dv(json!({"source": {"pvc": {"namespace": "ns", "name": "golden"}}, "storage": {}}));
        let c = for_data_volume(&d, 0.055, Some(100 << 20)).unwrap();
        assert_eq!(size(&c), (100u64 << 20).to_string());
        assert!(for_data_volume(&d, 0.055, None).is_err());
    }

    proptest! {
        #[test]
        fn the_overhead_leaves_at_least_the_size(size in 1u64..(1 << 50), overhead in 0.0f64..0.5) {
            let claim = with_overhead(size, overhead);
            prop_assert_eq!(claim % ALIGN, 0);
            prop_assert!((claim as f64) * (1.0 - overhead) >= size as f64 - 1.0);
            prop_assert!(claim >= size);
        }
    }
}
