//! kube-rs against a real server: typed CRUD, a watcher, and a Controller that adds and removes a
//! finalizer.

mod common;

use common::{Server, kube_client};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kubevirt_api::core::v1::VirtualMachine;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

async fn install_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kubevirt_api::object::all_crds(&Default::default()) {
        let name = crd.metadata.name.clone().unwrap();
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(10), established)
            .await
            .expect("established in time")
            .expect("wait");
    }
}

fn vm(name: &str) -> VirtualMachine {
    let doc = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}}}});
    serde_json::from_value(doc).expect("vm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_with_optimistic_concurrency() {
    let s = Server::start("kube-crud");
    let client = kube_client(&s).await;
    install_crds(&client).await;
    let api: Api<VirtualMachine> = Api::namespaced(client, "default");
    let created = api
        .create(&PostParams::default(), &vm("a"))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    let mut stale = created.clone();
    let mut fresh = api.get("a").await.expect("get");
    fresh.spec.run_strategy = Some("Always".into());
    let updated = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .expect("replace");
    assert_eq!(updated.metadata.generation, Some(2));
    stale.spec.run_strategy = Some("Manual".into());
    match api.replace("a", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("stale replace: {other:?}"),
    }
    let status = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "status": {"printableStatus": "Stopped"}});
    let patched = api
        .patch_status(
            "a",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status");
    assert_eq!(
        patched.status.unwrap().printable_status.as_deref(),
        Some("Stopped")
    );
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "status writes keep the generation"
    );
    assert_eq!(
        api.list(&Default::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    match api.get("a").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("get after delete: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_creates_and_deletes() {
    let s = Server::start("kube-watch");
    let client = kube_client(&s).await;
    install_crds(&client).await;
    let api: Api<VirtualMachine> = Api::namespaced(client, "default");
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let writer = api.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..5 {
            writer
                .create(&PostParams::default(), &vm(&format!("w{i}")))
                .await
                .expect("create");
        }
        writer
            .delete("w0", &DeleteParams::default())
            .await
            .expect("delete");
    });
    let (mut applied, mut deleted) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while applied < 5 || deleted < 1 {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("events in time")
            .expect("stream");
        match ev.expect("watch event") {
            watcher::Event::Apply(_) => applied += 1,
            watcher::Event::Delete(_) => deleted += 1,
            _ => {}
        }
    }
}

struct Ctx {
    api: Api<VirtualMachine>,
    cleaned: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>);

async fn reconcile(vm: Arc<VirtualMachine>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let api = ctx.api.clone();
    finalizer(&api, "kubevirt-rs.test/cleanup", vm, |event| async move {
        match event {
            Finalizer::Apply(_) => Ok(Action::await_change()),
            Finalizer::Cleanup(_) => {
                ctx.cleaned.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| ReconcileError(Box::new(e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_adds_and_removes_a_finalizer() {
    let s = Server::start("kube-controller");
    let client = kube_client(&s).await;
    install_crds(&client).await;
    let api: Api<VirtualMachine> = Api::namespaced(client, "default");
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        cleaned: AtomicUsize::new(0),
    });
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(200)),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    api.create(&PostParams::default(), &vm("f"))
        .await
        .expect("create");
    let has_finalizer = async {
        loop {
            let o = api.get("f").await.expect("get");
            if o.metadata
                .finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| f == "kubevirt-rs.test/cleanup")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), has_finalizer)
        .await
        .expect("finalizer added");
    api.delete("f", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = async {
        while api.get_opt("f").await.expect("get").is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), gone)
        .await
        .expect("finalizer removed and object gone");
    assert_eq!(ctx.cleaned.load(Ordering::SeqCst), 1);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_show_in_kubectl_describe() {
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let s = Server::start("kube-events");
    let client = kube_client(&s).await;
    install_crds(&client).await;
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &vm("ev"))
        .await
        .expect("create");
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "virt-controller".into(),
            instance: Some("node-1".into()),
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "SuccessfulCreate".into(),
        note: Some(
            "Started the virtual machine by creating the new virtual machine instance ev".into(),
        ),
        action: "Create".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &created.object_ref(&()))
        .await
        .expect("publish (events.k8s.io/v1)");
    recorder
        .publish(&event, &created.object_ref(&()))
        .await
        .expect("publish again: a series");
    let describe = s.ok(&["describe", "vm", "ev"]);
    assert!(
        describe.contains("SuccessfulCreate") && describe.contains("Started the virtual machine"),
        "{describe}"
    );
    let core = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=ev",
        "-o",
        "jsonpath={.items[0].reportingComponent}",
    ]);
    assert_eq!(core, "virt-controller");
    let v1 = s.ok(&[
        "get",
        "events.v1.events.k8s.io",
        "-o",
        "jsonpath={.items[0].regarding.name}",
    ]);
    assert_eq!(v1, "ev");
}
