//! What the launcher learns about the VMI's claims: upstream's VMI status carries each claim's
//! `volumeStatus[].persistentVolumeClaimInfo` (capacity, requests, access and volume modes),
//! from which virt-launcher sizes the `disk.img` it creates on a Filesystem claim that has none.
//! Here the node agent fills what the VMI it sends the launcher lacks, from the claims.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Client};
use kubevirt_api::core::v1::{PersistentVolumeClaimInfo, VirtualMachineInstance, VolumeStatus};

use crate::vmi::render::claims::claim_volumes;

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
    for c in claim_volumes(vmi) {
        let status = out.status.get_or_insert_with(Default::default);
        let volumes = status.volume_status.get_or_insert_with(Vec::new);
        if volumes
            .iter()
            .any(|s| s.name == c.volume && s.persistent_volume_claim_info.is_some())
        {
            continue;
        }
        let pvc = match claims.get(&c.claim).await {
            Ok(pvc) => pvc,
            Err(e) => {
                tracing::warn!(volume = c.volume, claim = c.claim, "reading the claim: {e}");
                continue;
            }
        };
        let status = out.status.get_or_insert_with(Default::default);
        let volumes = status.volume_status.get_or_insert_with(Vec::new);
        let info = Some(info_of(&pvc));
        match volumes.iter_mut().find(|s| s.name == c.volume) {
            Some(s) => s.persistent_volume_claim_info = info,
            None => volumes.push(VolumeStatus {
                name: c.volume,
                persistent_volume_claim_info: info,
                ..VolumeStatus::default()
            }),
        }
    }
    out
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
}
