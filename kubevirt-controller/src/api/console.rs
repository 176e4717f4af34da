//! `virtualmachineinstances/{name}/console`: a websocket (subprotocol `plain.kubevirt.io`,
//! binary frames) bridged to the VMI's serial console through its node agent.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::agents::NodeAgents;
use super::instance::{VMI, get, node_of};
use super::status::ApiError;
use crate::node::datagrams;
use crate::node::endpoint::AgentOp;
use crate::vm::instance::phase;

/// Upstream's websocket subprotocol for raw streams.
pub const PLAIN_PROTOCOL: &str = "plain.kubevirt.io";

/// What a websocket stream to a VMI asks of its node agent.
pub(super) struct StreamRequest<'a> {
    /// The VMI's namespace.
    pub ns: &'a str,
    /// The VMI's name.
    pub name: &'a str,
    /// The agent operation that opens the stream.
    pub op: AgentOp,
    /// What the stream is, for the error without an upgrade (`the console`, `port-forward`).
    pub what: &'a str,
    /// The virtctl command that upgrades, for that error.
    pub command: &'a str,
    /// Whether the stream carries datagrams (a UDP port-forward): one websocket message each.
    pub datagrams: bool,
}

/// Checks that the VMI runs, has its node agent open the stream, and only then accepts the
/// websocket upgrade (subprotocol `plain.kubevirt.io`, binary frames), so a refusal reaches
/// the client as a Status.
pub(super) async fn stream_to_vmi(
    client: &Client,
    agents: &NodeAgents,
    req: StreamRequest<'_>,
    upgrade: Option<WebSocketUpgrade>,
) -> Result<Response, ApiError> {
    let vmi = get(client, req.ns, req.name).await?;
    let phase = phase(&vmi);
    if phase != "Running" {
        let shown = if phase.is_empty() { "Pending" } else { phase };
        return Err(ApiError::bad_request(format!(
            "Unable to connect to VM because phase is {shown} instead of Running"
        )));
    }
    let Some(upgrade) = upgrade else {
        return Err(ApiError::bad_request(format!(
            "{} is a websocket: send Upgrade: websocket ({} does)",
            req.what, req.command
        )));
    };
    let node = node_of(&vmi)?;
    let uid = vmi.uid().unwrap_or_default();
    let stream = agents
        .call(client, &node, req.op, (req.ns, req.name, &uid))
        .await
        .map_err(|e| ApiError::conflict(VMI, req.name, e.message))?;
    let datagrams = req.datagrams;
    Ok(upgrade
        .protocols([PLAIN_PROTOCOL])
        .on_upgrade(move |ws| bridge(ws, stream, datagrams))
        .into_response())
}

/// GET `.../virtualmachineinstances/{name}/console`: the VMI's serial console.
pub async fn console(
    client: &Client,
    agents: &NodeAgents,
    ns: &str,
    name: &str,
    upgrade: Option<WebSocketUpgrade>,
) -> Result<Response, ApiError> {
    let req = StreamRequest {
        ns,
        name,
        op: AgentOp::Console,
        what: "the console",
        command: "virtctl console",
        datagrams: false,
    };
    stream_to_vmi(client, agents, req, upgrade).await
}

/// Copies between the websocket (a message a chunk) and the agent's connection until either
/// side ends: a byte stream (the console, TCP port-forward) or, with `datagrams`, framed
/// datagrams (`node::datagrams`: UDP port-forward), so that every message stays one datagram.
pub(super) async fn bridge<S>(ws: WebSocket, stream: S, datagrams: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let out = async {
        let mut buf = vec![0u8; 8192];
        loop {
            let chunk = if datagrams {
                datagrams::read(&mut rd).await.ok().flatten()
            } else {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(buf[..n].to_vec()),
                }
            };
            let Some(chunk) = chunk else { break };
            if ws_tx.send(Message::Binary(chunk.into())).await.is_err() {
                break;
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    let input = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            // A TLS stream (an agent on another node) holds writes until flushed.
            let sent = if datagrams {
                datagrams::write(&mut wr, &data).await
            } else {
                match wr.write_all(&data).await {
                    Ok(()) => wr.flush().await,
                    Err(e) => Err(e),
                }
            };
            if sent.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = out => {}
        _ = input => {}
    }
}

/// GET `.../virtualmachineinstances/{name}/vnc`: our VMs have no display.
pub async fn vnc(client: &Client, ns: &str, name: &str) -> Result<Response, ApiError> {
    get(client, ns, name).await?;
    Err(ApiError::bad_request(
        "No graphics devices are present: kubevirt-rs VMs have a serial console only (virtctl console)",
    ))
}
