//! Resource arithmetic: what a pod requests and what a node has left, in milli-units (as
//! Kubernetes compares them: `MilliValue` for every resource).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubevirt_api::quantity::Quantity as Parsed;

/// Resource name -> amount in thousandths.
pub type Amounts = BTreeMap<String, i128>;

/// A quantity the scheduler cannot read: named by its field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {source}")]
pub struct BadQuantity {
    /// Where it is (`spec.containers[0].resources.requests.cpu`).
    pub path: String,
    /// Why.
    #[source]
    pub source: kubevirt_api::quantity::QuantityError,
}

fn milli(q: &Quantity, path: &str) -> Result<i128, BadQuantity> {
    let bad = |source| BadQuantity {
        path: path.to_string(),
        source,
    };
    let parsed = Parsed::parse(&q.0).map_err(bad)?;
    parsed
        .ceil_milli_i128()
        .ok_or_else(|| bad(kubevirt_api::quantity::QuantityError::Range(q.0.clone())))
}

fn add_all(
    into: &mut Amounts,
    from: Option<&BTreeMap<String, Quantity>>,
    path: &str,
) -> Result<(), BadQuantity> {
    for (name, q) in from.into_iter().flatten() {
        *into.entry(name.clone()).or_default() += milli(q, &format!("{path}.{name}"))?;
    }
    Ok(())
}

/// What a pod asks for: the sum over its containers, at least the largest init container's,
/// plus its overhead (upstream `resource.PodRequests`). Every pod also takes one `pods` slot.
pub fn pod_requests(pod: &Pod) -> Result<Amounts, BadQuantity> {
    let mut sum = Amounts::new();
    let Some(spec) = &pod.spec else {
        return Ok(sum);
    };
    for (i, c) in spec.containers.iter().enumerate() {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        add_all(
            &mut sum,
            requests,
            &format!("spec.containers[{i}].resources.requests"),
        )?;
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let mut one = Amounts::new();
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        add_all(
            &mut one,
            requests,
            &format!("spec.initContainers[{i}].resources.requests"),
        )?;
        for (name, v) in one {
            let e = sum.entry(name).or_default();
            *e = (*e).max(v);
        }
    }
    add_all(&mut sum, spec.overhead.as_ref(), "spec.overhead")?;
    *sum.entry("pods".into()).or_default() += 1000;
    Ok(sum)
}

/// The node's allocatable resources (its capacity when allocatable is not reported).
pub fn allocatable(node: &Node) -> Result<Amounts, BadQuantity> {
    let status = node.status.as_ref();
    let (map, path) = match status.and_then(|s| s.allocatable.as_ref()) {
        Some(a) => (Some(a), "status.allocatable"),
        None => (status.and_then(|s| s.capacity.as_ref()), "status.capacity"),
    };
    let mut out = Amounts::new();
    add_all(&mut out, map, path)?;
    Ok(out)
}

/// A pod that still holds its resources: not finished (upstream counts every non-terminal pod
/// assigned to the node).
pub fn holds_resources(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The resources `pod` lacks on a node with `free` left, by name (`cpu`, `memory`, `pods`,
/// `devices.kubevirt.io/kvm`), in name order.
pub fn insufficient(requests: &Amounts, free: &Amounts) -> Vec<String> {
    requests
        .iter()
        .filter(|(name, want)| **want > 0 && free.get(*name).copied().unwrap_or(0) < **want)
        .map(|(name, _)| name.clone())
        .collect()
}

/// Upstream's "least allocated" score (0..=100): the mean over cpu and memory of the share left
/// free once the pod is placed. Pods without requests count as 100m CPU and 200Mi memory, as
/// upstream's scoring does, so empty pods still spread.
pub fn least_allocated(alloc: &Amounts, used_after: &Amounts) -> i64 {
    let mut total = 0i128;
    for name in ["cpu", "memory"] {
        let cap = alloc.get(name).copied().unwrap_or(0);
        let used = used_after.get(name).copied().unwrap_or(0);
        if cap > 0 && used <= cap {
            total += (cap - used) * 100 / cap;
        }
    }
    i64::try_from(total / 2).unwrap_or(0)
}

/// The requests used for scoring (upstream `NonZeroRequested`).
pub fn non_zero(requests: &Amounts) -> Amounts {
    let mut out = requests.clone();
    let cpu = out.entry("cpu".into()).or_default();
    if *cpu == 0 {
        *cpu = 100;
    }
    let mem = out.entry("memory".into()).or_default();
    if *mem == 0 {
        *mem = 200 * 1024 * 1024 * 1000;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1", "devices.kubevirt.io/kvm": "1"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
            "overhead": {"memory": "1Mi"},
        }}));
        let r = pod_requests(&p).unwrap();
        assert_eq!(r["cpu"], 2000);
        assert_eq!(r["memory"], 65 * 1024 * 1024 * 1000);
        assert_eq!(r["devices.kubevirt.io/kvm"], 1000);
        assert_eq!(r["pods"], 1000);
    }

    #[test]
    fn a_bad_quantity_is_named_by_its_path() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "lots"}}}]}}));
        assert_eq!(
            pod_requests(&p).unwrap_err().path,
            "spec.containers[0].resources.requests.cpu"
        );
    }

    #[test]
    fn insufficient_names_each_missing_resource() {
        let want = Amounts::from([
            ("cpu".into(), 500),
            ("memory".into(), 10),
            ("x/y".into(), 1000),
        ]);
        let free = Amounts::from([("cpu".into(), 400), ("memory".into(), 10)]);
        assert_eq!(insufficient(&want, &free), ["cpu", "x/y"]);
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let alloc = Amounts::from([("cpu".into(), 4000), ("memory".into(), 4000)]);
        let light = Amounts::from([("cpu".into(), 1000), ("memory".into(), 1000)]);
        let heavy = Amounts::from([("cpu".into(), 3000), ("memory".into(), 3000)]);
        assert!(least_allocated(&alloc, &light) > least_allocated(&alloc, &heavy));
        assert_eq!(least_allocated(&alloc, &light), 75);
    }
}
