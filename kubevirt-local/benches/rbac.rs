//! The cost of one RBAC decision against the number of RoleBindings stored: the server's indexed
//! view (`server::authz::Index`: grants looked up by user and group) against its peer in the same
//! run, the plain evaluator (`semantics::rbac::Policy`) that scans every binding and finds roles
//! by name, which is what authorising from the stored objects without an index costs.
//! Goal: the indexed decision at 10k bindings within 1.5x of the same decision at 100.
//!
//! Run: `cargo bench -p kubevirt-local --bench rbac` (the ratios are printed at the end).

use criterion::{Criterion, criterion_group, criterion_main};
use kubevirt_local::semantics::rbac::{Attributes, Policy, aggregate_all};
use kubevirt_local::semantics::rbac_bootstrap::{cluster_roles, kubevirt_cluster_roles};
use kubevirt_local::server::authz::{CLUSTER_ROLES, Index, ROLE_BINDINGS};
use kubevirt_local::storage::ObjectKey;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The bootstrap and KubeVirt cluster roles, and `n` namespaces each with a RoleBinding of
/// `view` to its own user.
fn objects(n: usize) -> (BTreeMap<ObjectKey, Value>, Policy) {
    let mut roles = cluster_roles();
    roles.extend(kubevirt_cluster_roles());
    let mut objects = BTreeMap::new();
    for r in &roles {
        let name = r["metadata"]["name"].as_str().expect("name");
        objects.insert(ObjectKey::new(CLUSTER_ROLES, "", name), r.clone());
    }
    let mut bindings = Vec::new();
    for i in 0..n {
        let ns = format!("ns{i}");
        let b = json!({"metadata": {"name": "view", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": format!("user{i}")}]});
        objects.insert(ObjectKey::new(ROLE_BINDINGS, &ns, "view"), b.clone());
        bindings.push(b);
    }
    aggregate_all(&mut roles);
    let policy = Policy {
        cluster_roles: roles,
        role_bindings: bindings,
        ..Default::default()
    };
    (objects, policy)
}

/// The last user listing VMs in its namespace (allowed: the scan goes through every binding).
fn request(n: usize) -> Attributes {
    Attributes {
        user: format!("user{}", n - 1),
        groups: vec!["system:authenticated".into()],
        verb: "list".into(),
        api_group: "kubevirt.io".into(),
        resource: "virtualmachines".into(),
        namespace: format!("ns{}", n - 1),
        ..Default::default()
    }
}

fn per_call(mut f: impl FnMut() -> bool) -> Duration {
    const CALLS: u32 = 2000;
    let start = Instant::now();
    for _ in 0..CALLS {
        assert!(std::hint::black_box(f()));
    }
    start.elapsed() / CALLS
}

fn bench(c: &mut Criterion) {
    let mut results = Vec::new();
    for n in [100usize, 10_000] {
        let (objs, policy) = objects(n);
        let index = Index::build(&objs);
        let a = request(n);
        c.bench_function(&format!("rbac indexed, {n} bindings"), |b| {
            b.iter(|| index.allows(&a).is_some())
        });
        c.bench_function(&format!("rbac scan, {n} bindings"), |b| {
            b.iter(|| policy.allows(&a))
        });
        let indexed = (0..5)
            .map(|_| per_call(|| index.allows(&a).is_some()))
            .min()
            .unwrap_or_default();
        let scan = (0..5)
            .map(|_| per_call(|| policy.allows(&a)))
            .min()
            .unwrap_or_default();
        results.push((n, indexed, scan));
    }
    let (_, base, _) = results[0];
    for (n, indexed, scan) in &results {
        println!(
            "rbac decision, {n} bindings: indexed {indexed:?} ({:.2}x of indexed at 100; goal <= 1.5x at 10k), scan {scan:?} (indexed/scan {:.4}x)",
            indexed.as_secs_f64() / base.as_secs_f64(),
            indexed.as_secs_f64() / scan.as_secs_f64()
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
