//! The VMI controller and the claims a VMI names, against a real API server (kubevirt-local in
//! process): while a claim is missing the VMI gets no pod and says which claim it waits for;
//! once the claims exist, the pod has them, a Filesystem claim mounted and a Block one (a
//! DataVolume's) as a device where the launcher looks.

mod common;

use common::{Cluster, VmiController, eventually};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use kubevirt_api::core::v1::VirtualMachineInstance;
use serde_json::json;

fn claim(name: &str, mode: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"volumeMode": mode, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmi_waits_for_its_claims_then_its_pod_has_them() {
    let c = Cluster::start(false).await;
    let controller = VmiController::start(&c);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let vmi: VirtualMachineInstance = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}},
            "volumes": [{"name": "rootdisk", "persistentVolumeClaim": {"claimName": "root"}},
                        {"name": "scratch", "dataVolume": {"name": "scratch-dv"}}]}
    }))
    .unwrap();
    // Only the first claim exists: the second is named, and there is no pod.
    claims
        .create(&PostParams::default(), &claim("root", "Filesystem"))
        .await
        .unwrap();
    vmis.create(&PostParams::default(), &vmi).await.unwrap();
    let message = eventually("the VMI naming its missing claim", || async {
        let s = vmis.get("demo").await.ok()?.status?;
        let c = s
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        (s.phase.as_deref() == Some("Pending")).then_some(c.message?)
    })
    .await;
    assert_eq!(
        message,
        "PVC default/scratch-dv does not exist, waiting for it to appear"
    );
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The DataVolume's claim appears (Block): the pod, with both claims.
    claims
        .create(&PostParams::default(), &claim("scratch-dv", "Block"))
        .await
        .unwrap();
    let pod = eventually("the launcher pod", || async {
        pods.list(&ListParams::default()).await.ok()?.items.pop()
    })
    .await;
    let spec = serde_json::to_value(pod.spec.unwrap()).unwrap();
    let volumes = spec["volumes"].as_array().unwrap();
    assert!(
        volumes
            .contains(&json!({"name": "rootdisk", "persistentVolumeClaim": {"claimName": "root"}}))
    );
    assert!(volumes.contains(
        &json!({"name": "scratch", "persistentVolumeClaim": {"claimName": "scratch-dv"}})
    ));
    let compute = &spec["containers"][0];
    assert!(compute["volumeMounts"].as_array().unwrap().contains(
        &json!({"name": "rootdisk", "mountPath": "/var/run/kubevirt-rs/volumes/rootdisk"})
    ));
    assert_eq!(
        compute["volumeDevices"],
        json!([{"name": "scratch", "devicePath": "/var/run/kubevirt-rs/volumes/scratch"}])
    );
    // The waiting is over.
    eventually("the FailedPvcNotFound condition gone", || async {
        let s = vmis.get("demo").await.ok()?.status?;
        let gone = !s
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.reason.as_deref() == Some("FailedPvcNotFound"));
        gone.then_some(())
    })
    .await;

    controller.stop().await;
}
