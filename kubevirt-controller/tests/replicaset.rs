//! The replica set controller against a real API server (kubevirt-local in process) and the real
//! kubectl: VMIs appear for the replicas, `kubectl scale` removes the surplus, a VMI relabelled
//! away is released and replaced, a finished VMI is replaced, and the status counts them.

mod common;

use common::{Cluster, eventually};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kubevirt_api::core::v1::{VirtualMachineInstance, VirtualMachineInstanceReplicaSet};
use serde_json::json;

fn set() -> VirtualMachineInstanceReplicaSet {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}}
    }))
    .unwrap()
}

/// The set's live VMIs (owned, not being deleted), by name.
async fn owned(vmis: &Api<VirtualMachineInstance>, rs_uid: &str) -> Vec<VirtualMachineInstance> {
    vmis.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .filter(|v| {
            v.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == rs_uid && r.controller == Some(true))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_keeps_its_vmis() {
    let c = Cluster::start(false).await;
    tokio::spawn(kubevirt_controller::replicaset::controller::run(
        c.client.clone(),
        std::future::pending(),
        |r| {
            if let Err(e) = r {
                eprintln!("replicaset: {e}");
            }
        },
    ));
    let sets: Api<VirtualMachineInstanceReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");
    let created = sets.create(&PostParams::default(), &set()).await.unwrap();
    let rs_uid = created.metadata.uid.unwrap();

    let three = eventually("three VMIs", || async {
        let v = owned(&vmis, &rs_uid).await;
        (v.len() == 3).then_some(v)
    })
    .await;
    for v in &three {
        assert!(
            v.metadata.name.as_deref().unwrap().starts_with("web"),
            "{:?}",
            v.metadata.name
        );
        assert_eq!(v.metadata.labels.as_ref().unwrap()["app"], "web");
    }
    eventually("status replicas 3", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.replicas == Some(3) && s.label_selector.as_deref() == Some("app=web")).then_some(())
    })
    .await;

    // kubectl scale goes through the scale subresource.
    let (ok, _, err) = c
        .kubectl(&["scale", "vmirs", "web", "--replicas=1"], None)
        .await;
    assert!(ok, "kubectl scale: {err}");
    let one = eventually("one VMI", || async {
        let v = owned(&vmis, &rs_uid).await;
        (v.len() == 1).then_some(v)
    })
    .await;

    // `kubectl get events` tells it: three SuccessfulCreate and two SuccessfulDelete, from
    // upstream's set controller.
    let selector = "involvedObject.name=web,involvedObject.kind=VirtualMachineInstanceReplicaSet";
    let reasons = eventually("the set's events", || async {
        let (ok, out, _) = c
            .kubectl(
                &["get", "events", "--field-selector", selector, "-o",
                  "jsonpath={range .items[*]}{.reason} {.source.component} {.count}{\"\\n\"}{end}"],
                None,
            )
            .await;
        let mut lines: Vec<String> = out.lines().map(String::from).collect();
        lines.sort();
        (ok && lines.len() == 5).then_some(lines)
    })
    .await;
    let component = "virtualmachinereplicaset-controller";
    let mut want = vec![format!("SuccessfulCreate {component} 1"); 3];
    want.extend(vec![format!("SuccessfulDelete {component} 1"); 2]);
    assert_eq!(reasons, want);

    // Relabelled away: released (no owner any more) and replaced.
    let stray = one[0].metadata.name.clone().unwrap();
    let relabel = json!({"metadata": {"labels": {"app": "other"}}});
    vmis.patch(&stray, &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    eventually("the stray released and replaced", || async {
        let released = vmis
            .get(&stray)
            .await
            .ok()?
            .metadata
            .owner_references
            .is_none_or(|o| o.is_empty());
        let v = owned(&vmis, &rs_uid).await;
        (released && v.len() == 1 && v[0].metadata.name.as_deref() != Some(&stray)).then_some(())
    })
    .await;

    // A VMI that ran and finished is replaced.
    let current = owned(&vmis, &rs_uid).await.remove(0);
    let name = current.metadata.name.clone().unwrap();
    let done = json!({"status": {"phase": "Succeeded",
        "phaseTransitionTimestamps": [{"phase": "Running", "phaseTransitionTimestamp": "2026-11-28T12:00:00Z"}]}});
    vmis.patch(&name, &PatchParams::default(), &Patch::Merge(&done))
        .await
        .unwrap();
    eventually("the finished VMI replaced", || async {
        let v = owned(&vmis, &rs_uid).await;
        (v.len() == 1 && v[0].metadata.name.as_deref() != Some(&name)).then_some(())
    })
    .await;

    let (_, out, _) = c
        .kubectl(&["get", "vmirs", "web", "--no-headers"], None)
        .await;
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        &words[..3],
        ["web", "1", "1"],
        "NAME DESIRED CURRENT: {out}"
    );
}
