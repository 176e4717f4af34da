//! `/portForward/{ns}/{pod}[/{uid}]`: the kubelet asks the runtime (CRI `PortForward`) for a
//! port-forward session into the pod's sandbox and redirects the caller (the API server) to the
//! runtime's streaming URL, as upstream's kubelet does with redirected streaming.
//!
//! containerd's streaming server needs only the sandbox id: the ports travel in each SPDY
//! stream's `port` header (its websocket flavour, which kubectl no longer speaks, would take them
//! from the `port` query, so any `port`/`ports` values asked for are passed on).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_cri::v1 as cri;

use crate::cri::{Cri, CriError, client_call, labels};

/// The ports of a query: every `port` and `ports` value (repeated or comma-separated).
pub fn ports(query: &str) -> Result<Vec<i32>, String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "port" && k != "ports" {
            continue;
        }
        for p in v.split("%2C").flat_map(|p| p.split(',')) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => out.push(i32::from(n)),
                _ => return Err(format!("invalid port {p:?}: a port is 1-65535")),
            }
        }
    }
    Ok(out)
}

/// The ready sandbox of pod `ns/pod` (of `uid`, if given), newest first.
async fn ready_sandbox(
    cri: &Cri,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
) -> Result<Option<String>, CriError> {
    let mut selector = labels::pod_selector(ns, pod);
    if let Some(uid) = uid {
        selector.insert(labels::POD_UID.to_string(), uid.to_string());
    }
    let mut found = cri
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: selector,
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .map_err(client_call("ListPodSandbox"))?
        .into_inner()
        .items;
    found.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(found.into_iter().next().map(|s| s.id))
}

/// Serves one port-forward request: a redirect to the runtime's streaming URL.
pub async fn stream(cri: &Cri, ns: &str, pod: &str, uid: Option<&str>, query: &str) -> Response {
    let port = match ports(query) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let id = match ready_sandbox(cri, ns, pod, uid).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                format!("pod {ns}/{pod} has no running sandbox on this node"),
            )
                .into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let url = cri
        .runtime
        .clone()
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: id,
            port,
        })
        .await
        .map(|r| r.into_inner().url)
        .map_err(client_call("PortForward"));
    match url {
        Ok(url) => (StatusCode::FOUND, [(header::LOCATION, url)]).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_port_and_ports() {
        assert_eq!(ports("").unwrap(), Vec::<i32>::new());
        assert_eq!(ports("port=80&ports=81,82&x=1").unwrap(), [80, 81, 82]);
        assert_eq!(ports("ports=8080%2C9090").unwrap(), [8080, 9090]);
        assert!(ports("port=0").unwrap_err().contains("\"0\""));
        assert!(ports("port=http").is_err());
        assert!(ports("port=70000").is_err());
    }
}
