//! Events the kubelet records about its pods (core/v1, source `kubelet` on this node, as
//! upstream's recorder writes them: `kubectl describe pod` and `kubectl get events` show them).
//! Best effort: a failed write is logged, never fails a sync. A failure that repeats on every
//! pass is recorded when it starts, when its message changes and then once per [`REPEAT`].

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

/// How often an unchanged failure is recorded again.
pub const REPEAT: Duration = Duration::from_secs(60);

/// Records a `Warning` event `reason` about `pod` from the kubelet of `node`.
pub async fn warn(client: &kube::Client, node: &str, pod: &Pod, reason: &str, message: &str) {
    record(client, node, pod, "Warning", reason, message).await;
}

/// Records a `Normal` event `reason` about `pod` from the kubelet of `node`.
pub async fn normal(client: &kube::Client, node: &str, pod: &Pod, reason: &str, message: &str) {
    record(client, node, pod, "Normal", reason, message).await;
}

async fn record(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let m = &pod.metadata;
    let ns = m.namespace.clone().unwrap_or_else(|| "default".into());
    let name = m.name.clone().unwrap_or_default();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let event: Event = match serde_json::from_value(json!({
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
            "uid": m.uid, "resourceVersion": m.resource_version},
        "type": type_,
        "reason": reason, "message": message,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet", "reportingInstance": node,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })) {
        Ok(e) => e,
        Err(_) => return,
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason, "recording an event failed");
    }
}

/// Decides when a repeating failure is recorded again.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<(String, Instant)>,
}

impl Throttle {
    /// Whether `message` is to be recorded now (and notes it as recorded).
    pub fn due(&mut self, message: &str, now: Instant) -> bool {
        let due = match &self.last {
            Some((m, at)) => m != message || now.duration_since(*at) >= REPEAT,
            None => true,
        };
        if due {
            self.last = Some((message.to_string(), now));
        }
        due
    }

    /// The failure is over.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_recorded_on_change_and_once_a_minute() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert!(t.due("a", t0));
        assert!(!t.due("a", t0 + Duration::from_secs(1)));
        assert!(t.due("b", t0 + Duration::from_secs(2)));
        assert!(!t.due("b", t0 + Duration::from_secs(30)));
        assert!(t.due("b", t0 + Duration::from_secs(63)));
        t.clear();
        assert!(t.due("b", t0 + Duration::from_secs(64)));
    }
}
