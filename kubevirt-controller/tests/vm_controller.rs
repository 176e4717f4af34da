//! The VM controller against a real API server (kubevirt-local, in process, on SQLite): the
//! instance appears, follows the run strategy and requests, its status reaches the VM, and
//! `kubectl get vm` shows it. The node is played by the test, which writes instance phases as
//! the node agent will.

mod common;

use std::time::Duration;

use common::{Cluster, eventually};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};
use serde_json::json;

fn vm(name: &str, strategy: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"runStrategy": strategy, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}}
    }))
    .unwrap()
}

/// What the node agent will do: move the instance to `phase` (recording Running in its
/// transition history, with Ready following it).
async fn set_phase(vmis: &Api<VirtualMachineInstance>, name: &str, phase: &str) {
    let ready = if phase == "Running" { "True" } else { "False" };
    let mut transitions =
        vec![json!({"phase": phase, "phaseTransitionTimestamp": "2026-11-28T12:00:00Z"})];
    if phase != "Running" {
        transitions
            .push(json!({"phase": "Running", "phaseTransitionTimestamp": "2026-11-28T11:59:00Z"}));
    }
    let patch = json!({"status": {"phase": phase, "phaseTransitionTimestamps": transitions,
        "conditions": [{"type": "Ready", "status": ready}]}});
    vmis.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn printable(vms: &Api<VirtualMachine>, name: &str) -> Option<String> {
    vms.get(name)
        .await
        .ok()?
        .status?
        .printable_status
        .map(String::from)
}

/// The events about VM `name` as `(reason, type, count, message)`, oldest first, through the
/// real kubectl.
async fn vm_events(c: &Cluster, name: &str) -> Vec<(String, String, i64, String)> {
    let selector = format!("involvedObject.name={name},involvedObject.kind=VirtualMachine");
    let (ok, out, err) = c
        .kubectl(
            &["get", "events", "--field-selector", &selector, "-o", "json"],
            None,
        )
        .await;
    assert!(ok, "kubectl get events: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut items: Vec<serde_json::Value> = list["items"].as_array().cloned().unwrap_or_default();
    // Names are `<object>.<creation time in hex nanoseconds>`: their order is the events'.
    items.sort_by_key(|e| e["metadata"]["name"].as_str().unwrap_or("").to_string());
    items
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            assert_eq!(e["source"]["component"], "virtualmachine-controller", "{e}");
            assert!(e["involvedObject"]["uid"].is_string(), "{e}");
            (
                s("reason"),
                s("type"),
                e["count"].as_i64().unwrap_or(0),
                s("message"),
            )
        })
        .collect()
}

async fn instance_uid(vmis: &Api<VirtualMachineInstance>, name: &str) -> Option<String> {
    vmis.get_opt(name)
        .await
        .unwrap()
        .and_then(|v| v.metadata.uid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_get_instances_that_follow_their_run_strategy() {
    let c = Cluster::start(false).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(kubevirt_controller::vm::controller::run(
        c.client.clone(),
        async {
            let _ = stop_rx.await;
        },
        |_| {},
    ));
    let vms: Api<VirtualMachine> = Api::namespaced(c.client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");

    // Always: the instance is created from the template, owned by the VM.
    let created = vms
        .create(&PostParams::default(), &vm("web", "Always"))
        .await
        .unwrap();
    let first = eventually("the instance", || async {
        vmis.get_opt("web").await.unwrap()
    })
    .await;
    let owner = &first.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, created.metadata.uid.clone().unwrap());
    assert_eq!(first.metadata.labels.as_ref().unwrap()["app"], "web");
    eventually("Starting", || async {
        (printable(&vms, "web").await.as_deref() == Some("Starting")).then_some(())
    })
    .await;

    // The node reports Running: the VM is Running and ready.
    set_phase(&vmis, "web", "Running").await;
    let status = eventually("Running", || async {
        let s = vms.get("web").await.ok()?.status?;
        (s.printable_status.as_deref() == Some("Running")).then_some(s)
    })
    .await;
    assert_eq!((status.created, status.ready), (Some(true), Some(true)));
    assert_eq!(status.run_strategy.as_deref(), Some("Always"));

    // The guest shuts down: Always replaces the instance.
    let first_uid = first.metadata.uid.clone().unwrap();
    set_phase(&vmis, "web", "Succeeded").await;
    eventually("a new instance", || async {
        instance_uid(&vmis, "web").await.filter(|u| *u != first_uid)
    })
    .await;

    // Halted: the instance goes and the VM shows Stopped, to kubectl too.
    let halt = json!({"spec": {"runStrategy": "Halted"}});
    vms.patch("web", &PatchParams::default(), &Patch::Merge(&halt))
        .await
        .unwrap();
    eventually("no instance", || async {
        instance_uid(&vmis, "web").await.is_none().then_some(())
    })
    .await;
    eventually("Stopped", || async {
        (printable(&vms, "web").await.as_deref() == Some("Stopped")).then_some(())
    })
    .await;

    // The story so far, as `kubectl get events` tells it: created, deleted when it shut down,
    // created again (the same message: one event, counted twice), deleted when halted.
    let told = eventually("four events", || async {
        let told = vm_events(&c, "web").await;
        let deletes = told.iter().filter(|e| e.0 == "SuccessfulDelete").count();
        (deletes == 2 && told.first().is_some_and(|e| e.2 == 2)).then_some(told)
    })
    .await;
    let reasons: Vec<&str> = told.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        reasons,
        ["SuccessfulCreate", "SuccessfulDelete", "SuccessfulDelete"],
        "{told:?}"
    );
    assert!(told.iter().all(|e| e.1 == "Normal"), "{told:?}");
    assert_eq!(
        told[0].3,
        "Started the virtual machine by creating the new virtual machine instance web"
    );
    assert_eq!(
        told[1].3,
        format!("Stopped the virtual machine by deleting the virtual machine instance {first_uid}")
    );
    // A sync with nothing to do (a label changed) tells nothing more.
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    vms.patch("web", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(vm_events(&c, "web").await, told);
    // `kubectl describe vm` lists them too (it finds them by the VM's uid).
    let (ok, described, err) = c.kubectl(&["describe", "vm", "web"], None).await;
    assert!(ok, "kubectl describe: {err}");
    let events = described.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events.contains("SuccessfulCreate") && events.contains("virtualmachine-controller"),
        "{described}"
    );

    let (ok, line, err) = c.kubectl(&["get", "vm", "web", "--no-headers"], None).await;
    assert!(ok, "kubectl: {err}");
    assert!(
        line.split_whitespace().any(|w| w == "Stopped"),
        "kubectl get vm: {line}"
    );

    // Manual: a Start request (what `virtctl start` adds) starts it; a Stop request stops it.
    let manual = json!({"spec": {"runStrategy": "Manual"}});
    vms.patch("web", &PatchParams::default(), &Patch::Merge(&manual))
        .await
        .unwrap();
    let start = json!({"status": {"stateChangeRequests": [{"action": "Start"}]}});
    vms.patch_status("web", &PatchParams::default(), &Patch::Merge(&start))
        .await
        .unwrap();
    let uid = eventually("a started instance", || async {
        instance_uid(&vmis, "web").await
    })
    .await;
    eventually("the request done", || async {
        let s = vms.get("web").await.ok()?.status?;
        s.state_change_requests.is_none().then_some(())
    })
    .await;
    let stop = json!({"status": {"stateChangeRequests": [{"action": "Stop", "uid": uid}]}});
    vms.patch_status("web", &PatchParams::default(), &Patch::Merge(&stop))
        .await
        .unwrap();
    eventually("the stopped instance gone", || async {
        instance_uid(&vmis, "web").await.is_none().then_some(())
    })
    .await;

    // Deleting the VM (back to Always, so an instance runs) takes its instance with it.
    vms.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"runStrategy": "Always"}})),
    )
    .await
    .unwrap();
    eventually("an instance again", || async {
        instance_uid(&vmis, "web").await
    })
    .await;
    vms.delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("the VM and its instance gone", || async {
        let gone = vms.get_opt("web").await.unwrap().is_none()
            && instance_uid(&vmis, "web").await.is_none();
        gone.then_some(())
    })
    .await;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_the_api_refuses_is_a_failure_on_the_vm() {
    let c = Cluster::start(false).await;
    tokio::spawn(kubevirt_controller::vm::controller::run(
        c.client.clone(),
        std::future::pending(),
        |_| {},
    ));
    let vms: Api<VirtualMachine> = Api::namespaced(c.client.clone(), "default");
    let mut bad = vm("broken", "Always");
    // No memory at all: upstream's webhook refuses such an instance.
    bad.spec.template.spec.as_mut().unwrap().domain.memory = None;
    vms.create(&PostParams::default(), &bad).await.unwrap();
    let failure = eventually("a Failure condition", || async {
        let s = vms.get("broken").await.ok()?.status?;
        s.conditions?.into_iter().find(|c| c.type_ == "Failure")
    })
    .await;
    assert_eq!(failure.reason.as_deref(), Some("FailedCreate"));
    assert!(
        failure.message.as_deref().unwrap_or("").contains("memory"),
        "{failure:?}"
    );
    // A Warning, and the retries bump its count instead of adding events.
    let told = eventually("a FailedCreate event", || async {
        let told = vm_events(&c, "broken").await;
        (!told.is_empty()).then_some(told)
    })
    .await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].0.as_str(), told[0].1.as_str()),
        ("FailedCreate", "Warning")
    );
    assert!(
        told[0]
            .3
            .starts_with("Error creating virtual machine instance: "),
        "{told:?}"
    );
}
