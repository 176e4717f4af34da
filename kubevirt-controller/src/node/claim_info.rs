//! What the launcher learns about the VMI's claims: upstream's VMI status carries each claim's
//! `volumeStatus[].persistentVolumeClaimInfo` (capacity, requests, access and volume modes),
//! from which virt-launcher sizes the `disk.img` it creates on a Filesystem claim that has none.
//! Here the node agent fills what the VMI it sends the launcher lacks, from the claims.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Client};
use kubevirt_api::core::v1::{PersistentVolumeClaimInfo, VirtualMachineInstance, VolumeStatus};

use crate::vmi::render::claims::{ClaimVolume, claim_volumes};

/// The info upstream keeps about `pvc`.
pub fn info_of(pvc: &PersistentVolumeClaim) -> PersistentVolumeClaimInfo {
    let spec = pvc.spec.as_ref();
    PersistentVolumeClaimInfo {
        claim_name: pvc.metadata.name.clone(),
        access_modes: spec.and_then(|s| s.access_modes.clone()),
        volume_mode: spec.and_then(|s| s.volume_mode.clone()),
        requests: spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.clone()),
        capacity: pvc.status.as_ref().and_then(|s| s.capacity.clone()),
        ..PersistentVolumeClaimInfo::default()
    }
}

/// `vmi` with `persistentVolumeClaimInfo` in its `status.volumeStatus` for every claim volume
/// that has none, read from the claim. A claim that cannot be read is left out: the launcher
/// needs the info only for a Filesystem claim without a `disk.img`, and says so then.
pub async fn with_claim_info(
    client: &Client,
    vmi: &VirtualMachineInstance,
) -> VirtualMachineInstance {
    let mut out = vmi.clone();
    let namespace = vmi.metadata.namespace.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    for c in lacking_info(vmi) {
        match claims.get(&c.claim).await {
            Ok(pvc) => set_info(&mut out, c.volume, info_of(&pvc)),
            Err(e) => tracing::warn!(volume = c.volume, claim = c.claim, "reading the claim: {e}"),
        }
    }
    out
}

/// `vmi`'s claim volumes whose `status.volumeStatus` has no `persistentVolumeClaimInfo` yet.
fn lacking_info(vmi: &VirtualMachineInstance) -> Vec<ClaimVolume> {
    let known = vmi
        .status
        .as_ref()
        .and_then(|s| s.volume_status.as_deref())
        .unwrap_or_default();
    let has_info = |volume: &str| {
        known
            .iter()
            .any(|s| s.name == volume && s.persistent_volume_claim_info.is_some())
    };
    claim_volumes(vmi)
        .into_iter()
        .filter(|c| !has_info(&c.volume))
        .collect()
}

/// Puts `info` into the `status.volumeStatus` of `volume` in `vmi`, adding that entry when
/// there is none.
fn set_info(vmi: &mut VirtualMachineInstance, volume: String, info: PersistentVolumeClaimInfo) {
    let volumes = vmi
        .status
        .get_or_insert_with(Default::default)
        .volume_status
        .get_or_insert_with(Vec::new);
    match volumes.iter_mut().find(|s| s.name == volume) {
        Some(s) => s.persistent_volume_claim_info = Some(info),
        None => volumes.push(VolumeStatus {
            name: volume,
            persistent_volume_claim_info: Some(info),
            ..VolumeStatus::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_is_the_claims_status_capacity_spec_modes_and_requests() {
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"capacity": {"storage": "2Gi"}}
        }))
        .unwrap();
        let info = serde_json::to_value(info_of(&pvc)).unwrap();
        assert_eq!(
            info,
            serde_json::json!({"claimName": "data", "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Filesystem", "requests": {"storage": "1Gi"},
                "capacity": {"storage": "2Gi"}})
        );
        let unbound: PersistentVolumeClaim =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(info_of(&unbound).capacity, None);
    }

    /// A VMI with the claim volumes `a` (claim `ca`), `b` (DataVolume `cb`) and `c` (claim
    /// `cc`), a container disk `d`, and `status` as given.
    fn vmi_with_status(status: serde_json::Value) -> VirtualMachineInstance {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "vm", "namespace": "ns"},
            "spec": {"domain": {"devices": {}}, "volumes": [
                {"name": "a", "persistentVolumeClaim": {"claimName": "ca"}},
                {"name": "b", "dataVolume": {"name": "cb"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "cc"}},
                {"name": "d", "containerDisk": {"image": "x"}}
            ]},
            "status": status
        }))
        .unwrap()
    }

    fn volumes(lacking: Vec<ClaimVolume>) -> Vec<(String, String)> {
        lacking.into_iter().map(|c| (c.volume, c.claim)).collect()
    }

    #[test]
    fn claims_whose_volume_status_has_the_info_are_not_read_again() {
        let pair = |v: &str, c: &str| (v.to_string(), c.to_string());
        let bare = vmi_with_status(serde_json::json!({}));
        assert_eq!(
            volumes(lacking_info(&bare)),
            [pair("a", "ca"), pair("b", "cb"), pair("c", "cc")]
        );
        // `a` has its info, `b` a status without it, `c` none: `b` and `c` are read.
        let partly = vmi_with_status(serde_json::json!({"volumeStatus": [
            {"name": "a", "target": "vda", "persistentVolumeClaimInfo": {"claimName": "ca"}},
            {"name": "b", "target": "vdb"}
        ]}));
        assert_eq!(
            volumes(lacking_info(&partly)),
            [pair("b", "cb"), pair("c", "cc")]
        );
        let known = vmi_with_status(serde_json::json!({"volumeStatus": [
            {"name": "a", "target": "", "persistentVolumeClaimInfo": {"claimName": "ca"}},
            {"name": "b", "target": "", "persistentVolumeClaimInfo": {"claimName": "cb"}},
            {"name": "c", "target": "", "persistentVolumeClaimInfo": {"claimName": "cc"}}
        ]}));
        assert_eq!(volumes(lacking_info(&known)), []);
    }

    #[test]
    fn the_info_goes_into_the_volumes_status_keeping_the_rest_or_into_a_new_one() {
        let info = |claim: &str| PersistentVolumeClaimInfo {
            claim_name: Some(claim.into()),
            ..PersistentVolumeClaimInfo::default()
        };
        let mut vmi = vmi_with_status(serde_json::json!({"volumeStatus": [
            {"name": "b", "target": "vdb"}
        ]}));
        set_info(&mut vmi, "b".into(), info("cb"));
        set_info(&mut vmi, "c".into(), info("cc"));
        let status = serde_json::to_value(&vmi.status).unwrap();
        assert_eq!(
            status["volumeStatus"],
            serde_json::json!([
                {"name": "b", "target": "vdb", "persistentVolumeClaimInfo": {"claimName": "cb"}},
                {"name": "c", "target": "", "persistentVolumeClaimInfo": {"claimName": "cc"}}
            ])
        );
        let mut bare = vmi_with_status(serde_json::Value::Null);
        assert!(bare.status.is_none());
        set_info(&mut bare, "a".into(), info("ca"));
        assert_eq!(
            serde_json::to_value(&bare.status).unwrap()["volumeStatus"][0]["persistentVolumeClaimInfo"],
            serde_json::json!({"claimName": "ca"})
        );
    }
}
