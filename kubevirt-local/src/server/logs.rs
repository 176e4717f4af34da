//! `GET pods/{name}/log`: proxied to the kubelet of the pod's node, as kube-apiserver does.
//!
//! The API server resolves the container (the `container` query, else the
//! `kubectl.kubernetes.io/default-container` annotation, else the pod's only container), finds
//! the node's kubelet endpoint (`status.daemonEndpoints.kubeletEndpoint.Port`) and streams the
//! kubelet's `/containerLogs/{namespace}/{pod}/{container}` answer back, `follow` included.
//!
//! The kubelet endpoint is plain HTTP on loopback (kubevirt-kubelet's `server`): this server
//! reaches the kubelets on its own host. A kubelet on another host would need TLS and client
//! authentication, which it does not serve.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::error::ApiError;
use crate::server::route::Target;
use crate::server::state::State;

/// The query parameters passed through to the kubelet (kubectl's `PodLogOptions`).
const PASSED: &[&str] = &[
    "follow",
    "previous",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// The annotation naming the container `kubectl logs` and `kubectl exec` default to.
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Where one pod's log is read from.
#[derive(Debug, PartialEq, Eq)]
struct LogSource {
    kubelet: SocketAddr,
    path: String,
}

/// The container a log request means, or the error kube-apiserver gives.
fn container_of(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let asked = asked
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .or_else(|| {
            pod["metadata"]["annotations"][DEFAULT_CONTAINER]
                .as_str()
                .map(str::to_string)
        });
    match asked {
        Some(c) if names.contains(&c.as_str()) => Ok(c),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match main.as_slice() {
                [only] => Ok((*only).to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                ))),
            }
        }
    }
}

/// The kubelet serving pod `ns/name` and the container a request means.
pub(super) fn locate(
    state: &State,
    t: &Target,
    container: Option<&str>,
) -> Result<(SocketAddr, String), ApiError> {
    let ns = t.namespace.as_deref().unwrap_or_default();
    let name = t.name.as_deref().unwrap_or_default();
    let pods = super::objects::resolve(state, t)?;
    let pod = state
        .store
        .get(&super::objects::key(&pods, ns, name))?
        .ok_or_else(|| ApiError::not_found(&pods, name))?;
    let container = container_of(&pod, container)?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    Ok((kubelet_of(state, name, node)?, container))
}

/// The kubelet endpoint of node `node`, where pod `pod` runs.
pub(super) fn kubelet_of(state: &State, pod: &str, node: &str) -> Result<SocketAddr, ApiError> {
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {pod} is not scheduled to a node yet"
        )));
    }
    let nodes = state
        .registry()
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("the nodes resource is not served"))?;
    let node_obj = state
        .store
        .get(&super::objects::key(&nodes, "", node))?
        .ok_or_else(|| ApiError::bad_request(format!("node {node} of pod {pod} is gone")))?;
    let port = node_obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "node {node} publishes no kubelet endpoint (status.daemonEndpoints.kubeletEndpoint.Port)"
            ))
        })?;
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Resolves the kubelet and the path for a log request.
fn source(
    state: &State,
    t: &Target,
    query: &BTreeMap<String, String>,
) -> Result<LogSource, ApiError> {
    let (kubelet, container) = locate(state, t, query.get("container").map(String::as_str))?;
    let ns = t.namespace.as_deref().unwrap_or_default();
    let name = t.name.as_deref().unwrap_or_default();
    let passed: Vec<String> = PASSED
        .iter()
        .filter_map(|k| query.get(*k).map(|v| format!("{k}={}", encode(v))))
        .collect();
    let mut path = format!("/containerLogs/{ns}/{name}/{container}");
    if !passed.is_empty() {
        path.push('?');
        path.push_str(&passed.join("&"));
    }
    Ok(LogSource { kubelet, path })
}

/// `GET path` on a kubelet; its answer, errors as a Status naming the kubelet.
pub(super) async fn kubelet_get(
    kubelet: SocketAddr,
    path: &str,
) -> Result<axum::http::Response<hyper::body::Incoming>, ApiError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::service_unavailable(format!("the kubelet at {kubelet} does not answer: {e}"))
    };
    let stream = tokio::net::TcpStream::connect(kubelet)
        .await
        .map_err(|e| unreachable(&e))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "kubelet connection");
        }
    });
    let req = Request::get(path)
        .header(header::HOST, "kubelet")
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    sender.send_request(req).await.map_err(|e| unreachable(&e))
}

/// GETs `path` of the kubelet, which answers a streaming request with a redirect to the
/// runtime's streaming URL: that URL, or the kubelet's error.
pub(super) async fn kubelet_redirect(kubelet: SocketAddr, path: &str) -> Result<String, ApiError> {
    let answer = kubelet_get(kubelet, path).await?;
    if answer.status() != axum::http::StatusCode::FOUND {
        return Err(kubelet_error(answer).await);
    }
    answer
        .headers()
        .get(axum::http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| ApiError::internal("the kubelet's redirect has no Location"))
}

/// A kubelet's error answer as a Status (its text is the message).
pub(super) async fn kubelet_error(answer: axum::http::Response<hyper::body::Incoming>) -> ApiError {
    let status = answer.status();
    let body = axum::body::to_bytes(Body::new(answer.into_body()), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    match status {
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => ApiError::bad_request(text),
        _ => ApiError::internal(format!("the kubelet answered {status}: {text}")),
    }
}

/// Percent-encodes a query value (the characters a `sinceTime` or a number can hold pass).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Serves `GET pods/{name}/log`.
pub async fn pod_log(
    state: std::sync::Arc<State>,
    t: Target,
    query: BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let src = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || source(&state, &t, &query))
            .await
            .map_err(|e| ApiError::internal(format!("log request failed: {e}")))??
    };
    let answer = kubelet_get(src.kubelet, &src.path).await?;
    if !answer.status().is_success() {
        return Err(kubelet_error(answer).await);
    }
    let mut r = Response::new(Body::new(answer.into_body()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str], default: Option<&str>) -> Value {
        let mut p = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>(),
                     "initContainers": [{"name": "init"}]}
        });
        if let Some(d) = default {
            p["metadata"]["annotations"] = json!({ DEFAULT_CONTAINER: d });
        }
        p
    }

    #[test]
    fn the_container_is_asked_defaulted_or_the_only_one() {
        assert_eq!(container_of(&pod(&["a"], None), None).unwrap(), "a");
        assert_eq!(
            container_of(&pod(&["a", "b"], None), Some("b")).unwrap(),
            "b"
        );
        assert_eq!(
            container_of(&pod(&["a", "b"], None), Some("init")).unwrap(),
            "init"
        );
        assert_eq!(
            container_of(&pod(&["a", "b"], Some("b")), None).unwrap(),
            "b"
        );
        let e = container_of(&pod(&["a", "b"], None), None).unwrap_err();
        assert!(e.to_string().contains("choose one of: [a b]"), "{e}");
        let e = container_of(&pod(&["a"], None), Some("zz")).unwrap_err();
        assert!(
            e.to_string()
                .contains("container zz is not valid for pod p"),
            "{e}"
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("2026-12-05T01:02:03Z"), "2026-12-05T01%3A02%3A03Z");
        assert_eq!(encode("10"), "10");
    }
}
