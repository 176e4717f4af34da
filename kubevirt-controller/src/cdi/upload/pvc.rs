//! Uploads straight into a claim (upstream's upload controller for `virtctl image-upload pvc`):
//! a PersistentVolumeClaim annotated `cdi.kubevirt.io/storage.upload.target` gets the same
//! `cdi-upload-<claim>` pod a DataVolume with an `upload` source gets (owned by the claim). The
//! claim's annotations tell the client how it goes, as upstream's do:
//! `cdi.kubevirt.io/storage.pod.ready: "true"` once the upload server runs, and
//! `cdi.kubevirt.io/storage.pod.phase` (`Pending`, `Running`, `Succeeded`, `Failed`), the
//! pod removed once the upload succeeded.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kubevirt_api::cdi::v1beta1::DataVolume;
use serde_json::json;

use crate::cdi::datavolume::importer::{Source, pod_for, running_ip, upload_pod_name};
use crate::cdi::datavolume::sync::annotation;
use crate::cdi::datavolume::{DataVolumeConfig, POD_PHASE};

/// Claim annotation: the claim is an upload target.
pub const UPLOAD_TARGET: &str = "cdi.kubevirt.io/storage.upload.target";
/// Claim annotation: the upload server is ready for data.
pub const POD_READY: &str = "cdi.kubevirt.io/storage.pod.ready";

/// How often upload targets are looked at when nothing changes.
const RESYNC: Duration = Duration::from_secs(2);

/// Whether `claim` is an upload target.
pub fn is_upload_target(claim: &PersistentVolumeClaim) -> bool {
    claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(UPLOAD_TARGET))
}

/// The upload server pod of `claim`: the DataVolume upload pod, owned by the claim.
pub fn pod_for_claim(claim: &PersistentVolumeClaim, config: &DataVolumeConfig) -> Pod {
    // The upload pod of a DataVolume that names this claim's spec as its `pvc`.
    let dv: DataVolume = serde_json::from_value(json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": claim.metadata.name, "namespace": claim.metadata.namespace,
                     "uid": claim.metadata.uid},
        "spec": {"source": {"upload": {}}, "pvc": claim.spec},
    }))
    .unwrap_or_default();
    let mut pod = pod_for(&dv, &Source::Upload, false, claim, config);
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "PersistentVolumeClaim".into(),
        name: claim.metadata.name.clone().unwrap_or_default(),
        uid: claim.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    pod
}

/// What one pass does for one claim: the annotations to set, whether to create or delete its
/// pod.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// Annotations to set on the claim.
    pub annotate: BTreeMap<String, String>,
    /// Create the upload pod.
    pub create_pod: bool,
    /// Delete the upload pod.
    pub delete_pod: bool,
}

/// The step for `claim` with its upload pod `pod` (pure).
pub fn step(claim: &PersistentVolumeClaim, pod: Option<&Pod>) -> Step {
    let mut s = Step::default();
    if annotation(claim, POD_PHASE) == Some("Succeeded") {
        s.delete_pod = pod.is_some();
        return s;
    }
    let Some(pod) = pod else {
        s.create_pod = true;
        s.annotate.insert(POD_PHASE.into(), "Pending".into());
        return s;
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|st| st.phase.as_deref())
        .unwrap_or("Pending");
    let ready = running_ip(pod).is_some();
    s.annotate.insert(POD_PHASE.into(), phase.to_string());
    s.annotate.insert(POD_READY.into(), ready.to_string());
    if phase == "Succeeded" {
        s.annotate.insert(POD_READY.into(), "false".into());
        s.delete_pod = true;
    }
    // Only what changes.
    s.annotate
        .retain(|k, v| annotation(claim, k) != Some(v.as_str()));
    s
}

/// Runs until `shutdown` resolves; `on_sync` hears each pass's outcome.
pub async fn run(
    client: Client,
    config: DataVolumeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let mut changes = watcher(claims, watcher::Config::default()).boxed();
    tokio::pin!(shutdown);
    loop {
        on_sync(sync(&client, &config).await);
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(RESYNC) => {}
            _ = changes.next() => {}
        }
    }
}

/// One pass over every upload target claim.
pub async fn sync(client: &Client, config: &DataVolumeConfig) -> Result<String, String> {
    let all: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let list = all
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing claims: {e}"))?;
    let mut targets = 0;
    for claim in list.items.iter().filter(|c| is_upload_target(c)) {
        targets += 1;
        let (Some(ns), Some(name)) = (&claim.metadata.namespace, &claim.metadata.name) else {
            continue;
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod_name = upload_pod_name(name);
        let pod = pods
            .get_opt(&pod_name)
            .await
            .map_err(|e| format!("reading pod {ns}/{pod_name}: {e}"))?
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| Some(&o.uid) == claim.metadata.uid.as_ref())
            });
        let s = step(claim, pod.as_ref());
        if s.create_pod {
            match pods
                .create(&PostParams::default(), &pod_for_claim(claim, config))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(format!("creating pod {ns}/{pod_name}: {e}")),
            }
        }
        if !s.annotate.is_empty() {
            let patch = json!({"metadata": {"annotations": s.annotate}});
            claims
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("annotating claim {ns}/{name}: {e}"))?;
        }
        if s.delete_pod {
            match pods.delete(&pod_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(format!("deleting pod {ns}/{pod_name}: {e}")),
            }
        }
    }
    Ok(format!("{targets} upload target claims"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(annotations: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "up", "namespace": "ns", "uid": "pvc-uid",
                         "annotations": annotations},
            "spec": {"volumeMode": "Block", "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap()
    }

    fn pod(phase: &str, running: bool) -> Pod {
        let state = if running {
            json!({"running": {}})
        } else {
            json!({"waiting": {}})
        };
        serde_json::from_value(json!({
            "metadata": {"name": "cdi-upload-up"},
            "status": {"phase": phase, "podIP": "10.0.0.9",
                       "containerStatuses": [{"name": "cdi-upload-server", "image": "i", "imageID": "",
                         "ready": running, "restartCount": 0, "state": state}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_target_gets_its_pod_then_ready_then_done() {
        let c = claim(json!({UPLOAD_TARGET: ""}));
        assert!(is_upload_target(&c));
        let s = step(&c, None);
        assert!(s.create_pod);
        assert_eq!(s.annotate[POD_PHASE], "Pending");
        let s = step(&c, Some(&pod("Running", true)));
        assert_eq!(s.annotate[POD_READY], "true");
        assert_eq!(s.annotate[POD_PHASE], "Running");
        let s = step(&c, Some(&pod("Succeeded", false)));
        assert!(s.delete_pod);
        assert_eq!(s.annotate[POD_PHASE], "Succeeded");
        let done = claim(json!({UPLOAD_TARGET: "", POD_PHASE: "Succeeded"}));
        assert_eq!(step(&done, None), Step::default());
        assert!(!is_upload_target(&claim(json!({}))));
    }

    #[test]
    fn the_pod_is_the_upload_server_owned_by_the_claim_with_the_device() {
        let p = pod_for_claim(
            &claim(json!({UPLOAD_TARGET: ""})),
            &DataVolumeConfig::new("img:1"),
        );
        assert_eq!(p.metadata.name.as_deref(), Some("cdi-upload-up"));
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("PersistentVolumeClaim", "pvc-uid")
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.name, "cdi-upload-server");
        assert!(c.volume_devices.is_some(), "a Block claim is a device");
    }
}
