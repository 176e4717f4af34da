//! The DataVolume controller's events against a real API server (kubevirt-local in process) and
//! the real kubectl: the test plays the claim binder and the kubelet (it writes the claim's and
//! the importer pod's status), and `kubectl get events` tells CDI's story, once.

mod common;

use std::time::Duration;

use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_controller::cdi::datavolume::DataVolumeConfig;
use serde_json::json;

/// The DataVolume's events as `reason type component count`, oldest first.
async fn told(c: &Cluster) -> Vec<String> {
    let (ok, out, err) = c
        .kubectl(
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=DataVolume,involvedObject.name=disk",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    assert!(ok, "kubectl get events: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    // Names are `<object>.<creation time in hex nanoseconds>`: their order is the events'.
    items.sort_by_key(|e| e["metadata"]["name"].as_str().unwrap_or("").to_string());
    items
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["reason"].as_str().unwrap_or(""),
                e["type"].as_str().unwrap_or(""),
                e["source"]["component"].as_str().unwrap_or(""),
                e["count"]
            )
        })
        .collect()
}

async fn until(c: &Cluster, n: usize) -> Vec<String> {
    eventually(&format!("{n} events"), || async {
        let t = told(c).await;
        (t.len() == n).then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_tells_cdis_story_once() {
    let c = Cluster::start(false).await;
    tokio::spawn(kubevirt_controller::cdi::datavolume::controller::run(
        c.client.clone(),
        DataVolumeConfig::new("importer:test"),
        std::future::pending(),
        |_| {},
    ));
    let dvs: Api<DataVolume> = Api::namespaced(c.client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let dv: DataVolume = serde_json::from_value(json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "disk", "namespace": "default"},
        "spec": {"source": {"http": {"url": "http://127.0.0.1:1/disk.img"}},
                 "storage": {"resources": {"requests": {"storage": "1Mi"}}}}
    }))
    .unwrap();
    dvs.create(&PostParams::default(), &dv).await.unwrap();
    const C: &str = "datavolume-controller";
    let first = until(&c, 2).await;
    assert_eq!(
        first,
        [
            format!("Pending Normal {C} 1"),
            format!("ImportScheduled Normal {C} 1")
        ]
    );

    // The binder binds the claim; the kubelet runs, then finishes the importer.
    let bound = json!({"status": {"phase": "Bound"}});
    claims
        .patch_status("disk", &PatchParams::default(), &Patch::Merge(&bound))
        .await
        .unwrap();
    until(&c, 3).await;
    let pod = eventually("the importer pod", || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let running = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "importer", "image": "importer:test", "imageID": "", "ready": true,
        "restartCount": 0, "state": {"running": {}}}]}});
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&running))
        .await
        .unwrap();
    until(&c, 4).await;
    let done = json!({"status": {"phase": "Succeeded"}});
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&done))
        .await
        .unwrap();
    let all = until(&c, 5).await;
    assert_eq!(
        all,
        [
            format!("Pending Normal {C} 1"),
            format!("ImportScheduled Normal {C} 1"),
            format!("Bound Normal {C} 1"),
            format!("ImportInProgress Normal {C} 1"),
            format!("ImportSucceeded Normal {C} 1"),
        ]
    );
    // A sync with nothing new (a label changed) tells nothing more.
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    dvs.patch("disk", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(told(&c).await, all);
}
