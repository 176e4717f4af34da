//! The PVC upload controller (`virtctl image-upload pvc`'s) against a real API server
//! (kubevirt-local in process): it is driven by watches of claims and upload server pods, so an
//! idle plane makes it do no passes at all, and a claim marked as an upload target gets its
//! `cdi-upload-<claim>` pod, the claim's annotations follow the pod (the test plays the kubelet)
//! and the pod goes once the upload succeeded.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubevirt_controller::cdi::datavolume::{DataVolumeConfig, POD_PHASE};
use kubevirt_controller::cdi::upload::pvc::{POD_READY, UPLOAD_TARGET};
use serde_json::json;

fn annotations(claim: &PersistentVolumeClaim) -> BTreeMap<String, String> {
    claim.metadata.annotations.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_plane_costs_no_passes_and_a_target_claim_gets_its_upload_pod() {
    let c = Cluster::start(false).await;
    let passes: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
    let seen = passes.clone();
    tokio::spawn(kubevirt_controller::cdi::upload::pvc::run(
        c.client.clone(),
        DataVolumeConfig::new("importer:test"),
        std::future::pending(),
        move |outcome| seen.lock().unwrap().push(outcome),
    ));
    let count = || passes.lock().unwrap().len();
    eventually("the first pass", || async { (count() > 0).then_some(()) }).await;
    // Idle: no claims change, no pass (the old controller listed every claim every 2 s).
    let before = count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(count(), before, "{:?}", passes.lock().unwrap());

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "up", "namespace": "default",
                     "annotations": {UPLOAD_TARGET: ""}},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "16Mi"}}}
    }))
    .unwrap();
    let claim = claims.create(&PostParams::default(), &claim).await.unwrap();
    let pod = eventually("the upload pod", || async {
        pods.get_opt("cdi-upload-up").await.unwrap()
    })
    .await;
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("PersistentVolumeClaim", claim.metadata.uid.as_ref())
    );
    eventually("the claim Pending", || async {
        let a = annotations(&claims.get("up").await.unwrap());
        (a.get(POD_PHASE).map(String::as_str) == Some("Pending")).then_some(())
    })
    .await;

    // The kubelet runs the server: the claim says it is ready.
    let running = json!({"status": {"phase": "Running", "podIP": "10.0.0.9",
        "containerStatuses": [{"name": "cdi-upload-server", "image": "importer:test",
        "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
    pods.patch_status(
        "cdi-upload-up",
        &PatchParams::default(),
        &Patch::Merge(&running),
    )
    .await
    .unwrap();
    eventually("the claim ready", || async {
        let a = annotations(&claims.get("up").await.unwrap());
        (a.get(POD_READY).map(String::as_str) == Some("true")
            && a.get(POD_PHASE).map(String::as_str) == Some("Running"))
        .then_some(())
    })
    .await;

    // The upload done: the claim says so, the pod goes.
    let done = json!({"status": {"phase": "Succeeded"}});
    pods.patch_status(
        "cdi-upload-up",
        &PatchParams::default(),
        &Patch::Merge(&done),
    )
    .await
    .unwrap();
    eventually("the pod deleted", || async {
        let a = annotations(&claims.get("up").await.unwrap());
        let gone = pods
            .get_opt("cdi-upload-up")
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        (a.get(POD_PHASE).map(String::as_str) == Some("Succeeded") && gone).then_some(())
    })
    .await;
    // And quiet again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(), settled, "{:?}", passes.lock().unwrap());
    assert!(
        passes.lock().unwrap().iter().all(Result::is_ok),
        "{:?}",
        passes.lock().unwrap()
    );
}
