//! Events the local control plane's controllers record (core/v1, as upstream's event recorder
//! writes them: `kubectl describe` and `kubectl get events` show them). Best effort: a failed
//! write is logged, never fails a sync.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something needs attention.
    Warning,
}

/// Record an event about `obj` from `component`.
pub async fn record<K: Resource<DynamicType = ()>>(
    client: &Client,
    component: &str,
    obj: &K,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let event: Event = match serde_json::from_value(json!({
        "metadata": {"generateName": format!("{}.", obj.name_any()), "namespace": ns},
        "involvedObject": {"apiVersion": K::api_version(&()), "kind": K::kind(&()),
            "namespace": obj.namespace(), "name": obj.name_any(), "uid": obj.meta().uid,
            "resourceVersion": obj.meta().resource_version},
        "type": match type_ { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "reason": reason, "message": message,
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })) {
        Ok(e) => e,
        Err(_) => return,
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason, component, "recording an event failed");
    }
}
