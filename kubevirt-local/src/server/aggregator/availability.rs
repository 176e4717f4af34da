//! The APIServices' `Available` condition, as kube-aggregator's availability controller keeps
//! it: `Local` for one served here; for one with a Service, `ServiceNotFound`,
//! `ServicePortError`, `EndpointsNotFound` or `MissingEndpoints` when there is no endpoint,
//! `FailedDiscoveryCheck` when its discovery document (`/apis/<group>/<version>`, asked as
//! `system:kube-aggregator` in `system:masters`) does not answer 2xx, else `Passed`. Checked
//! every [`PERIOD`]; the condition's `lastTransitionTime` moves only when its status does.

use super::{APISERVICES, Aggregator, State, headers, locate, proxy, resolve, tls_for};
use crate::error::ApiError;
use crate::storage::{EventType, ObjectKey};
use axum::body::Body;
use axum::http::{HeaderMap, Request};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often every APIService is checked.
pub const PERIOD: Duration = Duration::from_secs(2);
/// How long a discovery check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// An `Available` condition's status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// `True` or `False`.
    pub status: &'static str,
    /// Upstream's reason.
    pub reason: &'static str,
    /// Upstream's message.
    pub message: String,
}

impl Availability {
    fn down(reason: &'static str, message: String) -> Self {
        Self {
            status: "False",
            reason,
            message,
        }
    }
}

/// Check every APIService until `stop` resolves.
pub async fn run(state: Arc<State>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        for a in super::apiservices(&state) {
            let now = check(&state, &a).await;
            if let Err(e) = record(&state, &a, &now) {
                tracing::warn!(apiservice = %a["metadata"]["name"], error = %e, "recording availability");
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
}

/// `apiservice`'s availability now.
pub async fn check(state: &State, apiservice: &Value) -> Availability {
    let Some(svc) = resolve::service_ref(apiservice) else {
        return Availability {
            status: "True",
            reason: "Local",
            message: "Local APIServices are always available".into(),
        };
    };
    let at = match locate(state, &svc) {
        Ok(at) => at,
        Err(u) => return Availability::down(u.reason, u.message),
    };
    let (group, version) = (
        apiservice["spec"]["group"].as_str().unwrap_or_default(),
        apiservice["spec"]["version"].as_str().unwrap_or_default(),
    );
    let url = format!("https://{at}/apis/{group}/{version}");
    let failed = |why: String| {
        Availability::down(
            "FailedDiscoveryCheck",
            format!("failing or missing response from {url}: {why}"),
        )
    };
    let Some(aggregator) = state.aggregator.get() else {
        return failed("API aggregation is not enabled".into());
    };
    match discover(aggregator, apiservice, &svc, at, group, version).await {
        Ok((code, _)) if (200..300).contains(&code) => Availability {
            status: "True",
            reason: "Passed",
            message: "all checks passed".into(),
        },
        Ok((code, _)) => failed(format!("bad status from {url}: {code}")),
        Err(why) => failed(why),
    }
}

/// The largest discovery document read from an aggregated server.
const MAX_DISCOVERY_BYTES: usize = 4 << 20;

/// The status code and body of the aggregated server's discovery document.
pub(super) async fn discover(
    aggregator: &Aggregator,
    apiservice: &Value,
    svc: &resolve::ServiceRef,
    at: std::net::SocketAddr,
    group: &str,
    version: &str,
) -> Result<(u16, axum::body::Bytes), String> {
    let tls = tls_for(aggregator, apiservice, svc).map_err(|e| e.to_string())?;
    let checker = crate::server::authn::UserInfo {
        name: "system:kube-aggregator".into(),
        uid: String::new(),
        groups: vec![crate::semantics::rbac::MASTERS.into()],
        extra: Default::default(),
    };
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = format!("/apis/{group}/{version}")
        .parse()
        .map_err(|_| format!("{group}/{version} is not a valid group/version"))?;
    let server_name = svc.server_name();
    *req.headers_mut() = headers::forwarded(&HeaderMap::new(), &checker, &[], &server_name);
    let sent = proxy::send(at, tls, &server_name, req, None);
    let read = async {
        let resp = sent.await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), MAX_DISCOVERY_BYTES)
            .await
            .map_err(|e| format!("reading the discovery document: {e}"))?;
        Ok::<_, String>((code, body))
    };
    match tokio::time::timeout(CHECK_TIMEOUT, read).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

/// `status.conditions` with `now` as the `Available` condition; `None` if nothing changes.
pub fn updated_conditions(status: &Value, now: &Availability, time: &str) -> Option<Value> {
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let old = conditions.iter().position(|c| c["type"] == "Available");
    let transition = match old.map(|i| &conditions[i]) {
        Some(c)
            if c["status"] == now.status
                && c["reason"] == now.reason
                && c["message"] == now.message.as_str() =>
        {
            return None;
        }
        Some(c) if c["status"] == now.status => c["lastTransitionTime"].clone(),
        _ => json!(time),
    };
    let cond = json!({"type": "Available", "status": now.status, "lastTransitionTime": transition,
        "reason": now.reason, "message": now.message});
    match old {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
    Some(Value::Array(conditions))
}

/// Write `now` into the stored APIService (if it is still the same object).
fn record(state: &State, apiservice: &Value, now: &Availability) -> Result<(), ApiError> {
    let name = apiservice["metadata"]["name"].as_str().unwrap_or_default();
    let key = ObjectKey::new(APISERVICES, "", name);
    state.store.write(|t| -> Result<(), ApiError> {
        let Some(mut current) = t.get(&key)? else {
            return Ok(());
        };
        if current["metadata"]["uid"] != apiservice["metadata"]["uid"] {
            return Ok(());
        }
        let Some(conditions) =
            updated_conditions(&current["status"], now, &crate::server::state::now())
        else {
            return Ok(());
        };
        current["status"]["conditions"] = conditions;
        t.put(&key, current, EventType::Modified)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Availability {
        Availability {
            status: "True",
            reason: "Passed",
            message: "all checks passed".into(),
        }
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let first = updated_conditions(&json!({}), &up(), "T1").unwrap();
        assert_eq!(first[0]["lastTransitionTime"], "T1");
        let status = json!({"conditions": first});
        assert_eq!(updated_conditions(&status, &up(), "T2"), None);
        let down = Availability::down("MissingEndpoints", "none".into());
        let flipped = updated_conditions(&status, &down, "T3").unwrap();
        assert_eq!(flipped[0]["status"], "False");
        assert_eq!(flipped[0]["reason"], "MissingEndpoints");
        assert_eq!(flipped[0]["lastTransitionTime"], "T3");
        let other = Availability::down("ServiceNotFound", "gone".into());
        let status = json!({"conditions": flipped});
        let again = updated_conditions(&status, &other, "T4").unwrap();
        assert_eq!(again[0]["lastTransitionTime"], "T3");
        assert_eq!(again[0]["reason"], "ServiceNotFound");
    }
}
