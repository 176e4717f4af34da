//! `pods/{name}/exec` and `pods/{name}/attach` over websockets, as kubectl 1.32 speaks them
//! (`v5.channel.k8s.io`, or `v4.channel.k8s.io`).
//!
//! The API server resolves the pod's kubelet and container (as for logs), asks the kubelet for
//! a session (the kubelet answers with a redirect to the runtime's streaming URL, from CRI
//! `Exec`/`Attach`), dials that URL as a `v4.channel.k8s.io` websocket, then upgrades the
//! client and relays frames both ways. The channel framing (a leading byte: 0 stdin, 1 stdout,
//! 2 stderr, 3 status, 4 resize) is the same in v4 and v5; v5's close signal (`255, channel`)
//! has no v4 form and is not relayed, so a piped stdin's end does not reach the process.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as BackendMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::error::ApiError;
use crate::server::route::Target;
use crate::server::state::State;

/// The channel protocols this server speaks with clients, preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The protocol asked of the runtime's streaming server.
const BACKEND_PROTOCOL: &str = "v4.channel.k8s.io";
/// v5's close-signal channel.
const CLOSE_SIGNAL: u8 = 255;

/// The `container` value of a raw query, if any.
fn container_param(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "container")
        .map(|(_, v)| v.to_string())
}

/// `host:port` of an `http://host:port/path` streaming URL, and the `ws://` form of the URL.
fn websocket_url(url: &str) -> Result<(String, String), ApiError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ApiError::internal(format!(
            "the runtime's streaming URL {url:?} is not http://"
        ))
    })?;
    let host = rest.split('/').next().unwrap_or_default().to_string();
    Ok((host, format!("ws://{rest}")))
}

/// Dials the runtime's streaming URL asking for `v4.channel.k8s.io`.
async fn dial(url: &str) -> Result<WebSocketStream<TcpStream>, ApiError> {
    dial_with(url, Some(BACKEND_PROTOCOL)).await
}

/// Dials the runtime's streaming URL as a websocket of subprotocol `protocol` (none if `None`).
pub(super) async fn dial_with(
    url: &str,
    protocol: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, ApiError> {
    let (host, ws) = websocket_url(url)?;
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::service_unavailable(format!("the runtime's streaming server at {host}: {e}"))
    };
    let tcp = TcpStream::connect(&host).await.map_err(|e| failed(&e))?;
    let mut req = ws.into_client_request().map_err(|e| failed(&e))?;
    if let Some(p) = protocol {
        let value = axum::http::HeaderValue::from_str(p).map_err(|e| failed(&e))?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", value);
    }
    let (stream, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| failed(&e))?;
    Ok(stream)
}

/// Serves one `exec` or `attach` request on pod `t`.
pub async fn pod_stream(state: std::sync::Arc<State>, t: Target, req: Request) -> Response {
    match stream(state, t, req).await {
        Ok(r) => r,
        Err(e) => super::error_response(&e),
    }
}

async fn stream(
    state: std::sync::Arc<State>,
    t: Target,
    req: Request,
) -> Result<Response, ApiError> {
    let session = t.sub.clone().unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_string();
    let (mut parts, _) = req.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|_| {
            ApiError::bad_request(format!(
                "pods/{session} is served over websockets ({}): upgrade the connection",
                PROTOCOLS.join(", ")
            ))
        })?;
    let (kubelet, container) = {
        let t = t.clone();
        let asked = container_param(&query);
        tokio::task::spawn_blocking(move || super::logs::locate(&state, &t, asked.as_deref()))
            .await
            .map_err(|e| ApiError::internal(format!("{session} request failed: {e}")))??
    };
    let ns = t.namespace.as_deref().unwrap_or_default();
    let name = t.name.as_deref().unwrap_or_default();
    let path = format!("/{session}/{ns}/{name}/{container}?{query}");
    let location = super::logs::kubelet_redirect(kubelet, &path).await?;
    let backend = dial(&location).await?;
    Ok(upgrade.protocols(PROTOCOLS).on_upgrade(move |client| {
        let v5 = client
            .protocol()
            .is_some_and(|p| p.as_bytes() == PROTOCOLS[0].as_bytes());
        relay_frames(client, backend, v5, std::future::pending())
    }))
}

/// Relays websocket frames between a client and the runtime's streaming server until either
/// side ends or `ends` resolves, then closes the client normally (kubectl reports a close
/// without a status, 1005, as an error). `v5`: the client speaks v5, whose close-signal frames
/// have no v4 form and are dropped.
pub(super) async fn relay_frames(
    client: WebSocket,
    backend: WebSocketStream<TcpStream>,
    v5: bool,
    ends: impl std::future::Future<Output = ()>,
) {
    let (mut c_tx, mut c_rx) = client.split();
    let (mut b_tx, mut b_rx) = backend.split();
    let up = async {
        while let Some(Ok(m)) = c_rx.next().await {
            let m = match m {
                Message::Binary(b) if v5 && b.first() == Some(&CLOSE_SIGNAL) => continue,
                Message::Binary(b) => BackendMessage::Binary(b),
                Message::Text(t) => BackendMessage::Text(t.as_str().into()),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if b_tx.send(m).await.is_err() {
                break;
            }
        }
        let _ = b_tx.send(BackendMessage::Close(None)).await;
    };
    let down = async {
        while let Some(Ok(m)) = b_rx.next().await {
            let m = match m {
                BackendMessage::Binary(b) => Message::Binary(b),
                BackendMessage::Text(t) => Message::Text(t.as_str().into()),
                BackendMessage::Close(_) => break,
                _ => continue,
            };
            if c_tx.send(m).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
        _ = ends => {}
    }
    close_normally(&mut c_tx).await;
}

/// Sends a normal close (1000) to a client.
pub(super) async fn close_normally(tx: &mut futures::stream::SplitSink<WebSocket, Message>) {
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_urls() {
        assert_eq!(
            container_param("command=ls&container=main&stdout=true").as_deref(),
            Some("main")
        );
        assert_eq!(container_param("command=ls"), None);
        assert_eq!(
            websocket_url("http://127.0.0.1:4321/exec/abc").unwrap(),
            (
                "127.0.0.1:4321".to_string(),
                "ws://127.0.0.1:4321/exec/abc".to_string()
            )
        );
        assert!(websocket_url("https://x/y").is_err());
    }
}
