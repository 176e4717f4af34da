//! `pods/{name}/portforward`, as kubectl 1.32 speaks it: first SPDY/3.1 tunnelled in a websocket
//! (GET, `Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io`, each binary message a run of
//! SPDY bytes), then, if that upgrade fails, plain SPDY (POST, `Upgrade: SPDY/3.1`,
//! `X-Stream-Protocol-Version: portforward.k8s.io`).
//!
//! Like kube-apiserver, this server does not parse SPDY: the runtime's streaming server
//! (containerd's, reached through the kubelet's `/portForward`, which answers with the URL of
//! CRI `PortForward`) speaks the port-forward protocol itself. The server upgrades to that URL
//! with plain SPDY, then upgrades the client only once the runtime has (so a failure reaches
//! kubectl as an HTTP error it can print) and relays bytes: for a tunnelling client, each binary
//! message's payload to the runtime and the runtime's bytes back as binary messages (what
//! kube-apiserver's `TunnelingHandler` does); for a SPDY client, a plain copy both ways.
//!
//! Clients of the older websocket protocol (kube-rs among them: `v4.channel.k8s.io` or
//! `v4.base64.channel.k8s.io`, the ports in the `ports` query, one data and one error channel
//! per port) are served too, as upstream's kubelet serves them: the runtime's streaming server
//! speaks that protocol for the ports of the CRI request, so the server dials it as a websocket
//! and relays frames.
//!
//! The session ends when either side closes, and when the pod is deleted, replaced (another
//! uid) or finished: kubectl then reports `lost connection to pod` and exits, rather than
//! forwarding into a pod that is gone.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::server::route::Target;
use crate::server::state::State;
use crate::storage::{Event, EventType, ObjectKey};

/// The stream protocol of port forwarding.
const PROTOCOL: &str = "portforward.k8s.io";
/// The upgrade token of SPDY.
const SPDY: &str = "SPDY/3.1";
/// The websocket subprotocol that tunnels SPDY port forwarding.
const TUNNELED: &str = "SPDY/3.1+portforward.k8s.io";
/// The older websocket protocols, one data and one error channel per port (binary, base64).
const CHANNEL_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];
/// The header naming stream protocols.
const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// How much of the runtime's output one websocket message carries at most.
const CHUNK: usize = 32 * 1024;

/// How the client asked to upgrade.
enum Client {
    /// SPDY tunnelled in a websocket.
    Tunneled(WebSocketUpgrade),
    /// Plain SPDY: the connection, once the 101 is sent.
    Spdy(OnUpgrade),
    /// The older channel protocol (`None`: the client named no subprotocol, which means binary).
    Channel(WebSocketUpgrade, Option<&'static str>),
}

/// The values of every `name` header, split at commas and trimmed.
fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// Which upgrade the request asks for, or the error upstream gives for it.
async fn client_of(parts: &mut axum::http::request::Parts) -> Result<Client, ApiError> {
    let upgrade = header_values(&parts.headers, header::UPGRADE.as_str());
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        let offered = header_values(&parts.headers, header::SEC_WEBSOCKET_PROTOCOL.as_str());
        let channel = CHANNEL_PROTOCOLS
            .iter()
            .find(|p| offered.contains(p))
            .copied();
        if !offered.contains(&TUNNELED) && channel.is_none() && !offered.is_empty() {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade: none of the offered protocols {offered:?} is served \
                 (this server speaks {TUNNELED}, {})",
                CHANNEL_PROTOCOLS.join(", ")
            )));
        }
        let tunneled = offered.contains(&TUNNELED);
        let ws = WebSocketUpgrade::from_request_parts(parts, &())
            .await
            .map_err(|e| ApiError::bad_request(format!("unable to upgrade: {}", e.body_text())))?;
        if tunneled {
            return Ok(Client::Tunneled(ws));
        }
        return Ok(Client::Channel(ws, channel));
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case(SPDY)) {
        let asked = header_values(&parts.headers, PROTOCOL_HEADER);
        if !asked.is_empty() && !asked.contains(&PROTOCOL) {
            return Err(ApiError::forbidden(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {asked:?}, \
                 server supports [\"{PROTOCOL}\"]"
            )));
        }
        let on = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            ApiError::bad_request("unable to upgrade: this connection cannot be upgraded")
        })?;
        return Ok(Client::Spdy(on));
    }
    Err(ApiError::bad_request(format!(
        "Upgrade request required: pods/portforward is served over SPDY ({SPDY}, \
         {PROTOCOL_HEADER}: {PROTOCOL}) or a websocket tunnelling it ({TUNNELED})"
    )))
}

/// The pod a request forwards into.
#[derive(Debug)]
struct Forwarded {
    kubelet: SocketAddr,
    key: ObjectKey,
    uid: String,
}

/// Finds running pod `t` and its kubelet.
fn resolve(state: &State, t: &Target) -> Result<Forwarded, ApiError> {
    let ns = t.namespace.as_deref().unwrap_or_default();
    let name = t.name.as_deref().unwrap_or_default();
    let pods = super::objects::resolve(state, t)?;
    let key = super::objects::key(&pods, ns, name);
    let pod = state
        .store
        .get(&key)?
        .ok_or_else(|| ApiError::not_found(&pods, name))?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade connection: pod {name} is not running (phase {phase})"
        )));
    }
    Ok(Forwarded {
        kubelet: super::logs::kubelet_of(state, name, node)?,
        key,
        uid: pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// `host:port` and the request path of an `http://host:port/path` streaming URL.
fn split_url(url: &str) -> Result<(&str, String), ApiError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ApiError::internal(format!(
            "the runtime's streaming URL {url:?} is not http://"
        ))
    })?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((host, format!("/{path}")))
}

/// Upgrades to the runtime's streaming URL with SPDY; the upgraded connection.
async fn dial(url: &str) -> Result<TokioIo<Upgraded>, ApiError> {
    let (host, path) = split_url(url)?;
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::service_unavailable(format!("the runtime's streaming server at {host}: {e}"))
    };
    let tcp = TcpStream::connect(host).await.map_err(|e| failed(&e))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection");
        }
    });
    let req = axum::http::Request::post(path)
        .header(header::HOST, host)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, SPDY)
        .header(PROTOCOL_HEADER, PROTOCOL)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let answer = sender.send_request(req).await.map_err(|e| failed(&e))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = answer.status();
        let body = axum::body::to_bytes(Body::new(answer.into_body()), 64 * 1024)
            .await
            .unwrap_or_default();
        return Err(ApiError::internal(format!(
            "unable to upgrade connection: the runtime's streaming server answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let upgraded = hyper::upgrade::on(answer).await.map_err(|e| failed(&e))?;
    Ok(TokioIo::new(upgraded))
}

/// Resolves once pod `key` (of `uid`) is deleted, replaced or finished.
async fn pod_ends(
    state: Arc<State>,
    mut events: broadcast::Receiver<Arc<Event>>,
    key: ObjectKey,
    uid: String,
) {
    let ended = |e: &Event| {
        e.kind == EventType::Deleted
            || e.object["metadata"]["uid"].as_str() != Some(uid.as_str())
            || matches!(
                e.object["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
    };
    loop {
        match events.recv().await {
            Ok(e) if e.key == key && ended(&e) => return,
            Ok(_) => {}
            // Missed changes: look at the pod itself.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let (state, k) = (state.clone(), key.clone());
                let now = tokio::task::spawn_blocking(move || state.store.get(&k))
                    .await
                    .ok()
                    .and_then(Result::ok);
                let gone = match now {
                    Some(Some(pod)) => {
                        pod["metadata"]["uid"].as_str() != Some(uid.as_str())
                            || matches!(
                                pod["status"]["phase"].as_str(),
                                Some("Succeeded" | "Failed")
                            )
                    }
                    Some(None) => true,
                    None => false,
                };
                if gone {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Serves one `pods/{name}/portforward` request.
pub async fn pod_port_forward(state: Arc<State>, t: Target, req: Request) -> Response {
    match serve(state, t, req).await {
        Ok(r) => r,
        Err(e) => super::error_response(&e),
    }
}

async fn serve(state: Arc<State>, t: Target, req: Request) -> Result<Response, ApiError> {
    let query = req.uri().query().unwrap_or("").to_string();
    let (mut parts, _) = req.into_parts();
    // Subscribed before the pod is read, so its end cannot slip between the two.
    let events = state.store.subscribe();
    // The pod first, as kube-apiserver resolves it before proxying: a missing pod is a 404
    // whatever the request.
    let pod = {
        let (state, t) = (state.clone(), t.clone());
        tokio::task::spawn_blocking(move || resolve(&state, &t))
            .await
            .map_err(|e| ApiError::internal(format!("portforward request failed: {e}")))??
    };
    let client = client_of(&mut parts).await?;
    if matches!(client, Client::Channel(..)) && !names_ports(&query) {
        return Err(ApiError::bad_request(
            "the websocket port-forward protocol needs the ports to forward: add the `ports` query \
             parameter (e.g. ?ports=8080,9090)",
        ));
    }
    let path = format!(
        "/portForward/{}/{}/{}?{query}",
        pod.key.namespace, pod.key.name, pod.uid
    );
    let location = super::logs::kubelet_redirect(pod.kubelet, &path).await?;
    let ends = pod_ends(state, events, pod.key, pod.uid);
    if let Client::Channel(ws, protocol) = client {
        let backend = super::exec::dial_with(&location, protocol).await?;
        let ws = match protocol {
            Some(p) => ws.protocols([p]),
            None => ws,
        };
        return Ok(
            ws.on_upgrade(move |client| super::exec::relay_frames(client, backend, false, ends))
        );
    }
    let backend = dial(&location).await?;
    match client {
        Client::Tunneled(ws) => Ok(ws
            .protocols([TUNNELED])
            .on_upgrade(move |client| relay_tunneled(client, backend, ends))),
        Client::Spdy(on) => {
            tokio::spawn(async move {
                match on.await {
                    Ok(client) => relay_spdy(TokioIo::new(client), backend, ends).await,
                    Err(e) => tracing::debug!(error = %e, "portforward client upgrade"),
                }
            });
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static(SPDY));
            h.insert(PROTOCOL_HEADER, HeaderValue::from_static(PROTOCOL));
            Ok(r)
        }
        Client::Channel(..) => Err(ApiError::internal("the channel protocol is served above")),
    }
}

/// Whether a query names ports (`ports` or `port`).
fn names_ports(query: &str) -> bool {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .any(|(k, v)| (k == "ports" || k == "port") && !v.is_empty())
}

/// Relays a tunnelling client's binary messages and the runtime's SPDY bytes until either side
/// ends or the pod does.
async fn relay_tunneled(
    client: WebSocket,
    backend: TokioIo<Upgraded>,
    ends: impl Future<Output = ()>,
) {
    let (mut rd, mut wr) = tokio::io::split(backend);
    let (mut c_tx, mut c_rx) = client.split();
    let up = async {
        while let Some(Ok(m)) = c_rx.next().await {
            match m {
                Message::Binary(b) => {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Message::Ping(_) | Message::Pong(_) => {}
                // A text message is a protocol error in the tunnel (upstream refuses it too).
                Message::Text(_) | Message::Close(_) => break,
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if c_tx
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = ends => {}
    }
    // A normal close: kubectl's tunnel reads it as the end of the stream.
    super::exec::close_normally(&mut c_tx).await;
}

/// Copies a SPDY client's bytes and the runtime's both ways until either side ends or the pod
/// does.
async fn relay_spdy(
    mut client: TokioIo<Upgraded>,
    mut backend: TokioIo<Upgraded>,
    ends: impl Future<Output = ()>,
) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
        _ = ends => {}
    }
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_urls_split_into_host_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:4321/portforward/abc").unwrap(),
            ("127.0.0.1:4321", "/portforward/abc".to_string())
        );
        assert_eq!(
            split_url("http://127.0.0.1:4321").unwrap(),
            ("127.0.0.1:4321", "/".to_string())
        );
        assert!(split_url("https://x/y").is_err());
    }

    fn asked(headers: &[(&str, &str)]) -> Result<Client, ApiError> {
        let mut req = axum::http::Request::post("/x");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, _) = req.body(()).unwrap().into_parts();
        futures::executor::block_on(client_of(&mut parts))
    }

    #[test]
    fn upgrades_are_told_apart_and_refused_clearly() {
        let e = asked(&[]).err().unwrap();
        assert_eq!(e.code, 400);
        assert!(
            e.message.starts_with("Upgrade request required"),
            "{}",
            e.message
        );
        // A websocket protocol served neither way.
        let e = asked(&[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
        ])
        .err()
        .unwrap();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("none of the offered protocols"),
            "{}",
            e.message
        );
        // SPDY for another stream protocol.
        let e = asked(&[
            ("Upgrade", "SPDY/3.1"),
            ("Connection", "Upgrade"),
            (PROTOCOL_HEADER, "v4.channel.k8s.io"),
        ])
        .err()
        .unwrap();
        assert_eq!(e.code, 403);
        assert!(
            e.message.contains("unable to negotiate protocol"),
            "{}",
            e.message
        );
        // The right SPDY ask, on a connection that cannot be upgraded (no server under it).
        let e = asked(&[
            ("Upgrade", "spdy/3.1"),
            ("Connection", "Upgrade"),
            (PROTOCOL_HEADER, PROTOCOL),
        ])
        .err()
        .unwrap();
        assert!(e.message.contains("cannot"), "{}", e.message);
    }

    #[test]
    fn the_channel_protocol_needs_ports() {
        assert!(names_ports("ports=80"));
        assert!(names_ports("a=1&port=80"));
        assert!(!names_ports("ports="));
        assert!(!names_ports(""));
    }

    #[test]
    fn header_lists_split_at_commas() {
        let mut h = HeaderMap::new();
        h.append(PROTOCOL_HEADER, HeaderValue::from_static("a, b"));
        h.append(
            PROTOCOL_HEADER,
            HeaderValue::from_static("portforward.k8s.io"),
        );
        assert_eq!(
            header_values(&h, PROTOCOL_HEADER),
            ["a", "b", "portforward.k8s.io"]
        );
    }
}
