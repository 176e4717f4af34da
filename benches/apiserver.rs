//! The local API server under load, each result against its goal in the same run:
//! - N creates with a watch open: time until the watch has seen all N (goal: 1000 in < 3 s, with
//!   durable writes), with 1 and with 8 concurrent writers;
//! - list latency at 10k objects, from one client and from 8 concurrent clients;
//! - the cost of one create of an owned object (garbage collection's path) with 10k and 100k
//!   objects stored, against the same create with 1k stored (goal: within 1.2x at 100k).
//!
//! Run: `cargo bench --bench apiserver` (criterion; the ratios are printed at the end);
//! `cargo bench --bench apiserver -- "create with"` runs only the create-cost part.

use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kubevirt_local::server::{self, State};
use kubevirt_local::storage::{EventType, ObjectKey, Store};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

struct Harness {
    rt: Runtime,
    client: kube::Client,
    _dir: kubevirt_testsupport::TestDir,
}

fn start() -> Harness {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = kubevirt_testsupport::tempdir("bench");
    let store = Store::open(&dir.join("state.db")).expect("store");
    let client = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = State::new(store, None, addr.to_string()).expect("state");
        tokio::spawn(server::serve(listener, state, None, std::future::pending()));
        let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    });
    Harness {
        rt,
        client,
        _dir: dir,
    }
}

fn cm(name: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Create `n` objects in namespace `ns` from `writers` concurrent clients while a watch is open;
/// return the time until the watch has seen every one.
async fn creates_seen_by_watch(
    client: &kube::Client,
    ns: &str,
    n: usize,
    writers: usize,
) -> Duration {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // Wait for the initial list to finish.
    while let Some(Ok(e)) = events.next().await {
        if matches!(e, watcher::Event::InitDone) {
            break;
        }
    }
    let start = Instant::now();
    let per = n / writers;
    for w in 0..writers {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..per {
                api.create(&PostParams::default(), &cm(format!("w{w}-{i}")))
                    .await
                    .expect("create");
            }
        });
    }
    let mut seen = 0;
    while seen < per * writers {
        if let Some(Ok(watcher::Event::Apply(_))) = events.next().await {
            seen += 1;
        }
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let h = start();
    let mut report = Vec::new();
    let goal = Duration::from_secs(3);
    for writers in [1, 8] {
        let mut round = 0;
        let mut samples = Vec::new();
        let mut group = c.benchmark_group("apiserver");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .warm_up_time(Duration::from_millis(500));
        group.bench_function(
            format!("1000 creates seen by a watch, {writers} writer(s)"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        round += 1;
                        let ns = format!("w{writers}r{round}");
                        let d = h.rt.block_on(async {
                            let nss: Api<k8s_openapi::api::core::v1::Namespace> =
                                Api::all(h.client.clone());
                            let ns_obj = k8s_openapi::api::core::v1::Namespace {
                                metadata: ObjectMeta {
                                    name: Some(ns.clone()),
                                    ..Default::default()
                                },
                                ..Default::default()
                            };
                            nss.create(&PostParams::default(), &ns_obj)
                                .await
                                .expect("namespace");
                            creates_seen_by_watch(&h.client, &ns, 1000, writers).await
                        });
                        samples.push(d);
                        total += d;
                    }
                    total
                })
            },
        );
        group.finish();
        if samples.is_empty() {
            continue; // filtered out
        }
        samples.sort();
        let median = samples[samples.len() / 2];
        report.push(format!(
            "1000 creates seen by a watch, {writers} writer(s): median {:.2} s = {:.2}x the 3 s goal ({} rounds)",
            median.as_secs_f64(),
            median.as_secs_f64() / goal.as_secs_f64(),
            samples.len()
        ));
    }

    // 10k objects, then list latency.
    h.rt.block_on(async {
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.client.clone());
        let ns_obj = k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some("big".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        nss.create(&PostParams::default(), &ns_obj)
            .await
            .expect("namespace");
        let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), "big");
        let mut tasks = Vec::new();
        for w in 0..8 {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..1250 {
                    api.create(&PostParams::default(), &cm(format!("b{w}-{i}")))
                        .await
                        .expect("create");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
    });
    let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), "big");
    let list_goal = Duration::from_millis(500);
    let mut one = Vec::new();
    let mut lists = c.benchmark_group("apiserver");
    lists
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    lists.bench_function("list 10k objects, 1 client", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let l =
                    h.rt.block_on(api.list(&ListParams::default()))
                        .expect("list");
                assert_eq!(l.items.len(), 10_000);
                let d = t.elapsed();
                one.push(d);
                total += d;
            }
            total
        })
    });
    let mut eight = Vec::new();
    lists.bench_function("list 10k objects, 8 concurrent clients", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                h.rt.block_on(async {
                    let lists = (0..8).map(|_| {
                        let api = api.clone();
                        tokio::spawn(async move {
                            api.list(&ListParams::default())
                                .await
                                .expect("list")
                                .items
                                .len()
                        })
                    });
                    for l in futures::future::join_all(lists).await {
                        assert_eq!(l.expect("task"), 10_000);
                    }
                });
                let d = t.elapsed();
                eight.push(d);
                total += d;
            }
            total
        })
    });
    lists.finish();
    for (name, mut s, n) in [("1 client", one, 1), ("8 concurrent clients", eight, 8)] {
        if s.is_empty() {
            continue; // filtered out
        }
        s.sort();
        let median = s[s.len() / 2];
        report.push(format!(
            "list of 10k objects, {name}: median {:.0} ms for {n} list(s) = {:.2}x a 500 ms-per-list budget",
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() / (list_goal.as_secs_f64() * n as f64)
        ));
    }
    println!("\n== apiserver results (ratio to the goal; < 1 is within it)");
    for r in report {
        println!("{r}");
    }
}

/// `n` ConfigMaps in namespace `seed`, written straight to the store in large transactions:
/// every tenth is an owner of the nine after it, as controllers' objects are.
fn seed(store: &Store, n: usize) {
    let owner_uid = |i: usize| format!("00000000-0000-4000-8000-{:012}", i / 10 * 10);
    for chunk in (0..n).collect::<Vec<_>>().chunks(20_000) {
        store
            .write(|tx| {
                for &i in chunk {
                    let name = format!("s{i}");
                    let mut metadata = json!({"name": name, "namespace": "seed",
                        "uid": format!("00000000-0000-4000-8000-{i:012}"),
                        "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "seed"}});
                    if i % 10 != 0 {
                        metadata["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
                            "name": format!("s{}", i / 10 * 10), "uid": owner_uid(i)}]);
                    }
                    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                        "data": {"key": "value"}});
                    tx.put(&ObjectKey::new("/configmaps", "seed", name), cm, EventType::Added)?;
                }
                Ok::<_, kubevirt_local::storage::StoreError>(())
            })
            .expect("seed");
    }
}

/// A server over a fresh store holding `stored` objects (plus the namespaces `seed` and `bench`).
fn seeded(stored: usize) -> Harness {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = kubevirt_testsupport::tempdir(&format!("bench-{stored}"));
    let store = Store::open(&dir.join("state.db")).expect("store");
    seed(&store, stored);
    let client = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = State::new(store, None, addr.to_string()).expect("state");
        tokio::spawn(server::serve(listener, state, None, std::future::pending()));
        let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        for ns in ["seed", "bench"] {
            let ns_obj = k8s_openapi::api::core::v1::Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            nss.create(&PostParams::default(), &ns_obj)
                .await
                .expect("namespace");
        }
        client
    });
    Harness {
        rt,
        client,
        _dir: dir,
    }
}

/// One create of an owned ConfigMap, with 1k, 10k and 100k objects stored; each against 1k.
fn create_cost(c: &mut Criterion) {
    let sizes = [1_000, 10_000, 100_000];
    let mut medians = Vec::new();
    let mut group = c.benchmark_group("apiserver");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    for stored in sizes {
        let mut harness: Option<Harness> = None;
        let mut samples = Vec::new();
        let mut next = 0usize;
        group.bench_function(format!("create with {stored} objects stored"), |b| {
            // Seeded on first use, so a filter that skips this size skips its seeding.
            let h = harness.get_or_insert_with(|| seeded(stored));
            let api: Api<ConfigMap> = Api::namespaced(h.client.clone(), "bench");
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    next += 1;
                    let mut owned = cm(format!("c{next}"));
                    owned.metadata.owner_references = Some(vec![
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                            api_version: "v1".into(),
                            kind: "ConfigMap".into(),
                            name: "s0".into(),
                            uid: "00000000-0000-4000-8000-000000000000".into(),
                            ..Default::default()
                        },
                    ]);
                    let t = Instant::now();
                    h.rt.block_on(api.create(&PostParams::default(), &owned))
                        .expect("create");
                    let d = t.elapsed();
                    samples.push(d);
                    total += d;
                }
                total
            })
        });
        if !samples.is_empty() {
            samples.sort();
            medians.push((stored, samples[samples.len() / 2], samples.len()));
        }
    }
    group.finish();
    let Some(&(_, base, _)) = medians.iter().find(|(n, _, _)| *n == 1_000) else {
        return;
    };
    println!("\n== apiserver create cost by store size (ratio to 1k stored; goal <= 1.2 at 100k)");
    for (stored, median, count) in medians {
        println!(
            "create of an owned object, {stored} objects stored: median {:.2} ms = {:.2}x the cost at 1k ({count} creates)",
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() / base.as_secs_f64()
        );
    }
}

criterion_group!(benches, create_cost, bench);
criterion_main!(benches);
