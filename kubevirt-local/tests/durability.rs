//! Durability and concurrency: restarts keep every object and the resourceVersion, `kill -9` loses
//! no acknowledged write, watches resume or get 410, and concurrent writers never lose an update.

mod common;

use common::{Server, kube_client, tempdir};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_objects_and_resource_versions() {
    let s = Server::start("restart");
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&s).await, "default");
    for i in 0..20 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "x"))
            .await
            .expect("create");
    }
    let before = api.list(&Default::default()).await.expect("list");
    let rv_before: u64 = before
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&s).await, "default");
    let after = api.list(&Default::default()).await.expect("list");
    assert_eq!(
        after
            .metadata
            .resource_version
            .as_deref()
            .map(|r| r.parse::<u64>().unwrap()),
        Some(rv_before)
    );
    let names = |l: &kube::api::ObjectList<ConfigMap>| -> Vec<(Option<String>, Option<String>)> {
        l.items
            .iter()
            .map(|c| (c.metadata.name.clone(), c.metadata.resource_version.clone()))
            .collect()
    };
    assert_eq!(names(&before), names(&after));
    let next = api
        .create(&PostParams::default(), &cm("after", "x"))
        .await
        .expect("create");
    assert_eq!(
        next.metadata.resource_version,
        Some((rv_before + 1).to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let s = Server::start("kill9");
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&s).await, "default");
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (api, acked) = (api.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                match api.create(&PostParams::default(), &cm(&name, "x")).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let dir = s.kill();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "only {} writes acknowledged before the kill",
        acked.len()
    );
    let s = Server::start_in(dir, &[]);
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&s).await, "default");
    let stored: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_conflict_but_never_lose_an_update() {
    let s = Server::start("conflicts");
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&s).await, "default");
    api.create(&PostParams::default(), &cm("counter", "0"))
        .await
        .expect("create");
    let conflicts = Arc::new(AtomicUsize::new(0));
    let (clients, increments) = (6, 15);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (api, conflicts) = (api.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..increments {
                loop {
                    let mut c = api.get("counter").await.expect("get");
                    let v: u64 = c.data.as_ref().unwrap()["v"].parse().unwrap();
                    c.data = Some(BTreeMap::from([("v".to_string(), (v + 1).to_string())]));
                    match api.replace("counter", &PostParams::default(), &c).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            conflicts.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("replace: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let c = api.get("counter").await.expect("get");
    assert_eq!(c.data.unwrap()["v"], (clients * increments).to_string());
    println!(
        "{} conflicts answered with 409",
        conflicts.load(Ordering::SeqCst)
    );
}

#[test]
fn watch_resumes_or_gets_410() {
    let s = Server::start_in(tempdir("resume"), &["--watch-history", "10"]);
    let docs: String = (0..40).map(|i| format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{v: \"1\"}}\n")).collect();
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(&docs));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rv: u64 = s
        .ok(&[
            "get",
            "configmap",
            "c39",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .unwrap();
    let raw = |from: u64| {
        s.ok(&["get", "--raw", &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={from}&timeoutSeconds=1")])
    };
    let recent = raw(rv - 3);
    let added: Vec<&str> = recent.lines().filter(|l| l.contains("\"ADDED\"")).collect();
    assert_eq!(
        added.len(),
        3,
        "catches up from a recent version:\n{recent}"
    );
    let old = raw(2);
    assert!(
        old.contains("\"ERROR\"") && old.contains("410") && old.contains("Expired"),
        "{old}"
    );
}
