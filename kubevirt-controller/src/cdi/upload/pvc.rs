//! Uploads straight into a claim (upstream's upload controller for `virtctl image-upload pvc`):
//! a PersistentVolumeClaim annotated `cdi.kubevirt.io/storage.upload.target` gets the same
//! `cdi-upload-<claim>` pod a DataVolume with an `upload` source gets (owned by the claim). The
//! claim's annotations tell the client how it goes, as upstream's do:
//! `cdi.kubevirt.io/storage.pod.ready: "true"` once the upload server runs, and
//! `cdi.kubevirt.io/storage.pod.phase` (`Pending`, `Running`, `Succeeded`, `Failed`), the
//! pod removed once the upload succeeded.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kubevirt_api::cdi::v1beta1::DataVolume;
use serde_json::json;

use crate::cdi::datavolume::importer::{Source, pod_for, running_ip, upload_pod_name};
use crate::cdi::datavolume::sync::annotation;
use crate::cdi::datavolume::{DataVolumeConfig, POD_PHASE};

/// Claim annotation: the claim is an upload target.
pub const UPLOAD_TARGET: &str = "cdi.kubevirt.io/storage.upload.target";
/// Claim annotation: the upload server is ready for data.
pub const POD_READY: &str = "cdi.kubevirt.io/storage.pod.ready";

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

/// The upload server pods' label (`cdi.kubevirt.io: cdi-upload-server`), what the pod watch
/// selects.
const UPLOAD_POD_SELECTOR: &str = "cdi.kubevirt.io=cdi-upload-server";
/// The first wait before a failed pass is tried again (doubling up to [`RETRY_MAX`]).
const RETRY_MIN: Duration = Duration::from_millis(500);
/// The longest wait before a failed pass is tried again.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Runs until `shutdown` resolves; `on_sync` hears each pass's outcome. Event-driven: a pass
/// runs when a claim or an upload server pod changes (read from the watches' caches, no
/// listing), and again after a failure with a growing back-off; an idle plane costs nothing.
pub async fn run(
    client: Client,
    config: DataVolumeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let claim_changes = reflector(
        claim_writer,
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(drop)
    .boxed();
    let pod_changes = reflector(
        pod_writer,
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(UPLOAD_POD_SELECTOR),
        ),
    )
    .default_backoff()
    .map(drop)
    .boxed();
    let mut changes = futures::stream::select(claim_changes, pod_changes);
    tokio::pin!(shutdown);
    // Both caches filled once before the first pass.
    let ready = async {
        let _ = tokio::join!(claims.wait_until_ready(), pods.wait_until_ready());
    };
    tokio::pin!(ready);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = &mut ready => break,
            _ = changes.next() => {}
        }
    }
    let mut retry: Option<Duration> = None;
    loop {
        // Whatever else already arrived is seen by this pass too.
        while let Some(Some(())) = changes.next().now_or_never() {}
        let outcome = sync(&client, &config, &claims.state(), &pods).await;
        retry = match (&outcome, retry) {
            (Ok(_), _) => None,
            (Err(_), None) => Some(RETRY_MIN),
            (Err(_), Some(d)) => Some((d * 2).min(RETRY_MAX)),
        };
        on_sync(outcome);
        let again = async {
            match retry {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = changes.next() => {}
            _ = again => {}
        }
    }
}

/// One pass over the upload target claims in `claims`, their pods looked up in `pods`.
pub async fn sync(
    client: &Client,
    config: &DataVolumeConfig,
    claims: &[Arc<PersistentVolumeClaim>],
    pods: &Store<Pod>,
) -> Result<String, String> {
    let mut targets = 0;
    for claim in claims.iter().filter(|c| is_upload_target(c)) {
        targets += 1;
        let (Some(ns), Some(name)) = (&claim.metadata.namespace, &claim.metadata.name) else {
            continue;
        };
        let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod_name = upload_pod_name(name);
        let pod = pods.get(&ObjectRef::new(&pod_name).within(ns)).filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == claim.metadata.uid.as_ref())
        });
        let s = step(claim, pod.as_deref());
        if s.create_pod {
            match pod_api
                .create(&PostParams::default(), &pod_for_claim(claim, config))
                .await
            {
                Ok(_) => {}
                // Made by an earlier pass the cache has not seen yet.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(format!("creating pod {ns}/{pod_name}: {e}")),
            }
        }
        if !s.annotate.is_empty() {
            let patch = json!({"metadata": {"annotations": s.annotate}});
            claim_api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("annotating claim {ns}/{name}: {e}"))?;
        }
        if s.delete_pod {
            match pod_api.delete(&pod_name, &DeleteParams::default()).await {
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
