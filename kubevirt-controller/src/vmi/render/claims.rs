//! A VMI's claims in its pod (pure): every `persistentVolumeClaim` volume, and every `dataVolume`
//! one (a DataVolume's claim has the DataVolume's name), becomes a pod volume of the claim; the
//! `compute` container gets a Filesystem claim mounted at `<VOLUMES_IN_POD>/<volume>` (where the
//! launcher expects `disk.img`) and a Block claim as the device `<VOLUMES_IN_POD>/<volume>`.
//! Which of the two a claim is, the controller learns from the claim ([`ClaimModes`]).
//! Hotplugged volumes are not the pod's (upstream attaches them through another pod).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimVolumeSource, Volume, VolumeDevice, VolumeMount,
};
use kubevirt_api::core::v1::VirtualMachineInstance;

use super::RenderError;
use crate::storage::claim::VolumeMode;

/// Where the launcher finds the VMI's claims in the pod (its default `--volumes-dir`).
pub const VOLUMES_IN_POD: &str = "/var/run/kubevirt-rs/volumes";

/// The volume mode of each claim the VMI names, by claim name (what the controller read).
pub type ClaimModes = BTreeMap<String, VolumeMode>;

/// A VMI volume backed by a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimVolume {
    /// The VMI's volume name (the pod volume's too).
    pub volume: String,
    /// The claim's name.
    pub claim: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Where in the VMI: `spec.volumes[i].persistentVolumeClaim` or `...dataVolume`.
    pub field: String,
}

/// The VMI's claims, in volume order (hotplugged ones left out).
pub fn claim_volumes(vmi: &VirtualMachineInstance) -> Vec<ClaimVolume> {
    let mut out = Vec::new();
    for (i, v) in vmi.spec.volumes.iter().flatten().enumerate() {
        if let Some(p) = &v.persistent_volume_claim
            && p.hotpluggable != Some(true)
        {
            out.push(ClaimVolume {
                volume: v.name.clone(),
                claim: p.claim_name.clone(),
                read_only: p.read_only == Some(true),
                field: format!("spec.volumes[{i}].persistentVolumeClaim"),
            });
        } else if let Some(d) = &v.data_volume
            && d.hotpluggable != Some(true)
        {
            out.push(ClaimVolume {
                volume: v.name.clone(),
                claim: d.name.clone(),
                read_only: false,
                field: format!("spec.volumes[{i}].dataVolume"),
            });
        }
    }
    out
}

/// What the VMI's claims add to its pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaimParts {
    /// The pod's volumes.
    pub volumes: Vec<Volume>,
    /// What `compute` mounts (Filesystem claims).
    pub mounts: Vec<VolumeMount>,
    /// What `compute` gets as devices (Block claims).
    pub devices: Vec<VolumeDevice>,
}

/// The claims' pod volumes, and what `compute` mounts and gets as devices. `reserved`: the pod's
/// own volume names, which a VMI volume may not take.
pub fn claim_parts(
    vmi: &VirtualMachineInstance,
    modes: &ClaimModes,
    reserved: &[&str],
) -> Result<ClaimParts, RenderError> {
    let ClaimParts {
        mut volumes,
        mut mounts,
        mut devices,
    } = ClaimParts::default();
    for c in claim_volumes(vmi) {
        if reserved.contains(&c.volume.as_str()) {
            return Err(RenderError::ReservedVolume {
                field: c.field,
                name: c.volume,
            });
        }
        let Some(mode) = modes.get(&c.claim) else {
            return Err(RenderError::UnknownClaim {
                field: c.field,
                claim: c.claim,
            });
        };
        let path = format!("{VOLUMES_IN_POD}/{}", c.volume);
        match mode {
            VolumeMode::Filesystem => mounts.push(VolumeMount {
                name: c.volume.clone(),
                mount_path: path,
                read_only: c.read_only.then_some(true),
                ..VolumeMount::default()
            }),
            VolumeMode::Block => devices.push(VolumeDevice {
                name: c.volume.clone(),
                device_path: path,
            }),
        }
        volumes.push(Volume {
            name: c.volume,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: c.claim,
                read_only: c.read_only.then_some(true),
            }),
            ..Volume::default()
        });
    }
    Ok(ClaimParts {
        volumes,
        mounts,
        devices,
    })
}
