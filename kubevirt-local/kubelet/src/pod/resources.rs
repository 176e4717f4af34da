//! `resourceFieldRef`: a container's cpu, memory or ephemeral-storage limit or request, divided
//! by `divisor` and rounded up, as upstream's kubelet exposes them to the downward API (a limit
//! the container does not set is the node's allocatable amount).

use k8s_openapi::api::core::v1::{Pod, ResourceFieldSelector};

use super::quantity;

/// The node's allocatable amount of `resource` (`cpu` in cores, the rest in bytes).
fn node_allocatable(resource: &str) -> Option<f64> {
    match resource {
        "cpu" => std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as f64),
        "memory" => crate::node::capacity::memory_bytes().map(|b| b as f64),
        _ => None,
    }
}

/// The value of `r` for `pod`, or what is wrong with it.
pub fn value(pod: &Pod, r: &ResourceFieldSelector) -> Result<String, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let name = r.container_name.as_deref().unwrap_or_default();
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .ok_or_else(|| format!("containerName {name:?} is not a container of the pod"))?;
    let (kind, resource) = r
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", r.resource))?;
    if !matches!(resource, "cpu" | "memory" | "ephemeral-storage")
        || !matches!(kind, "limits" | "requests")
    {
        return Err(format!("unsupported resource {:?}", r.resource));
    }
    let res = c.resources.as_ref();
    let set = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        _ => res.and_then(|r| r.requests.as_ref()),
    }
    .and_then(|m| m.get(resource));
    let amount = match set {
        Some(q) => quantity::parse(&r.resource, &q.0).map_err(|e| e.to_string())?,
        None if kind == "limits" => node_allocatable(resource)
            .ok_or_else(|| format!("the node's allocatable {resource} is unknown"))?,
        None => 0.0,
    };
    let divisor = match &r.divisor {
        Some(d) => quantity::parse("divisor", &d.0).map_err(|e| e.to_string())?,
        None => 1.0,
    };
    if divisor <= 0.0 {
        return Err(format!("divisor {divisor} must be positive"));
    }
    Ok(format!("{}", (amount / divisor).ceil() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "c", "resources": {
                "limits": {"cpu": "1500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}}]},
        }))
        .unwrap()
    }

    fn sel(v: serde_json::Value) -> ResourceFieldSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn values_round_up_by_the_divisor() {
        let p = pod();
        let get = |v| value(&p, &sel(v));
        assert_eq!(
            get(serde_json::json!({"containerName": "c", "resource": "limits.cpu"})),
            Ok("2".into())
        );
        assert_eq!(
            get(
                serde_json::json!({"containerName": "c", "resource": "requests.cpu", "divisor": "1m"})
            ),
            Ok("250".into())
        );
        assert_eq!(
            get(
                serde_json::json!({"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"})
            ),
            Ok("64".into())
        );
        assert_eq!(
            get(serde_json::json!({"containerName": "c", "resource": "requests.memory"})),
            Ok("0".into())
        );
        let node_cpus = std::thread::available_parallelism()
            .unwrap()
            .get()
            .to_string();
        let p2: Pod =
            serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "c"}]}}))
                .unwrap();
        assert_eq!(
            value(
                &p2,
                &sel(serde_json::json!({"containerName": "c", "resource": "limits.cpu"}))
            ),
            Ok(node_cpus)
        );
    }

    #[test]
    fn bad_selectors_say_why() {
        let p = pod();
        let e = value(
            &p,
            &sel(serde_json::json!({"containerName": "x", "resource": "limits.cpu"})),
        )
        .unwrap_err();
        assert!(e.contains("\"x\""), "{e}");
        let e = value(
            &p,
            &sel(serde_json::json!({"containerName": "c", "resource": "limits.gpu"})),
        )
        .unwrap_err();
        assert!(e.contains("limits.gpu"), "{e}");
    }
}
