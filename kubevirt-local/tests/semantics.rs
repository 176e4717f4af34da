//! API semantics through kube-rs against a real server: garbage collection under each propagation
//! policy, namespace termination, pagination, selectors, dry runs and watch bookmarks.

mod common;

use common::{Server, kube_client};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;

fn cm(name: &str, labels: &[(&str, &str)], owner: Option<&ConfigMap>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.metadata.name.clone().unwrap(),
                    uid: o.metadata.uid.clone().unwrap(),
                    block_owner_deletion: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        data: Some(BTreeMap::new()),
        ..Default::default()
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn family(api: &Api<ConfigMap>, owner: &str) -> ConfigMap {
    let o = api
        .create(&PostParams::default(), &cm(owner, &[], None))
        .await
        .expect("owner");
    for d in ["a", "b"] {
        api.create(
            &PostParams::default(),
            &cm(&format!("{owner}-{d}"), &[], Some(&o)),
        )
        .await
        .expect("dependent");
    }
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_follows_the_propagation_policy() {
    let s = Server::start("gc");
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&s).await, "default");

    family(&api, "bg").await;
    api.delete("bg", &DeleteParams::background())
        .await
        .expect("delete");
    eventually("background dependents are gone", async || {
        api.get_opt("bg-a").await.unwrap().is_none() && api.get_opt("bg-b").await.unwrap().is_none()
    })
    .await;

    family(&api, "fg").await;
    api.delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete");
    eventually("foreground owner and dependents are gone", async || {
        api.get_opt("fg").await.unwrap().is_none() && api.get_opt("fg-a").await.unwrap().is_none()
    })
    .await;

    family(&api, "or").await;
    api.delete("or", &DeleteParams::orphan())
        .await
        .expect("delete");
    eventually("the orphaning owner is gone", async || {
        api.get_opt("or").await.unwrap().is_none()
    })
    .await;
    let orphan = api.get("or-a").await.expect("dependent kept");
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "owner reference stripped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_deletes_its_contents() {
    let s = Server::start("ns");
    let c = kube_client(&s).await;
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("scratch".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "scratch");
    api.create(&PostParams::default(), &cm("x", &[], None))
        .await
        .expect("cm");
    let missing: Api<ConfigMap> = Api::namespaced(c, "nope");
    match missing
        .create(&PostParams::default(), &cm("x", &[], None))
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("create in a missing namespace: {other:?}"),
    }
    nss.delete("scratch", &DeleteParams::default())
        .await
        .expect("delete ns");
    eventually("the namespace and its contents are gone", async || {
        nss.get_opt("scratch").await.unwrap().is_none() && api.get_opt("x").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_selectors_and_dry_run() {
    let s = Server::start("list");
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&s).await, "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(
            &PostParams::default(),
            &cm(&format!("p{i}"), &[("tier", tier)], None),
        )
        .await
        .expect("create");
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = api.list(&params).await.expect("page");
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    let even = api
        .list(&ListParams::default().labels("tier=even"))
        .await
        .expect("labels");
    assert_eq!(even.items.len(), 4);
    let not_p1 = api
        .list(
            &ListParams::default()
                .fields("metadata.name!=p1")
                .labels("tier in (odd)"),
        )
        .await
        .expect("fields");
    assert_eq!(not_p1.items.len(), 2);
    match api.list(&ListParams::default().fields("data.v=1")).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 400),
        other => panic!("unsupported field selector: {other:?}"),
    }
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &cm("ghost", &[], None))
        .await
        .expect("dry run");
    assert!(
        api.get_opt("ghost").await.unwrap().is_none(),
        "a dry run stores nothing"
    );
}

#[test]
fn watch_ends_with_a_bookmark_when_asked() {
    let s = Server::start("bookmark");
    let out = s.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"]);
    let last = out.lines().last().expect("a line");
    assert!(
        last.contains("\"BOOKMARK\"")
            && last.contains("\"apiVersion\":\"v1\"")
            && last.contains("\"kind\":\"ConfigMap\""),
        "{out}"
    );
}

/// A dependent created while its owner waits in a foreground delete (a controller acting on a
/// stale cache does that) is collected as soon as it is written, so the owner does not wait for
/// it forever; one created after its owner is gone goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_dependents_are_collected() {
    let s = Server::start("late");
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&s).await, "default");
    let owner = api
        .create(&PostParams::default(), &cm("late", &[], None))
        .await
        .unwrap();
    // A dependent that holds the foreground delete open (a finalizer of its own).
    let mut held = cm("late-held", &[], Some(&owner));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    api.delete("late", &DeleteParams::foreground())
        .await
        .unwrap();
    // Written while the owner is being deleted: collected at once.
    api.create(&PostParams::default(), &cm("late-new", &[], Some(&owner)))
        .await
        .unwrap();
    eventually("the late dependent is gone", async || {
        api.get_opt("late-new").await.unwrap().is_none()
    })
    .await;
    // Releasing the held dependent lets the owner go.
    let release = serde_json::json!({"metadata": {"finalizers": null}});
    api.patch(
        "late-held",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&release),
    )
    .await
    .unwrap();
    eventually("the owner is gone", async || {
        api.get_opt("late").await.unwrap().is_none()
    })
    .await;
    // A dependent of an owner that no longer exists is collected on creation.
    api.create(
        &PostParams::default(),
        &cm("late-orphan", &[], Some(&owner)),
    )
    .await
    .unwrap();
    eventually("the dependent of a gone owner is gone", async || {
        api.get_opt("late-orphan").await.unwrap().is_none()
    })
    .await;
}
