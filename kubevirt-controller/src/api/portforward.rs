//! `virtualmachineinstances/{name}/portforward/{port}[/{protocol}]` (and the same under
//! `virtualmachines`, for the VM's instance): a websocket (subprotocol `plain.kubevirt.io`,
//! binary frames) bridged to a TCP connection to the guest's port, which the VMI's node agent
//! makes from inside the launcher's network namespace; with protocol `udp`, each websocket
//! message is one datagram to or from the guest's UDP port (framed on the agent's leg by
//! [`crate::node::datagrams`]). The API server never connects itself.

use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use kube::Client;

use super::agents::NodeAgents;
use super::console::{StreamRequest, stream_to_vmi};
use super::status::ApiError;
use crate::node::endpoint::AgentOp;

/// The port of a port-forward path and whether it is UDP (`tcp`, the default, or `udp`).
pub fn parse_port(port: &str, protocol: Option<&str>) -> Result<(u16, bool), ApiError> {
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!("port {port:?} is not a port number (1-65535)"))
        })?;
    match protocol {
        None | Some("tcp") => Ok((port, false)),
        Some("udp") => Ok((port, true)),
        Some(other) => Err(ApiError::bad_request(format!(
            "protocol {other:?} is not tcp or udp"
        ))),
    }
}

/// GET the port-forward: checks the VMI, has its node agent connect to the guest's port, and
/// only then accepts the upgrade, so a refusal (a closed port) reaches the client as a Status.
pub async fn forward(
    client: &Client,
    agents: &NodeAgents,
    ns: &str,
    name: &str,
    (port, udp): (u16, bool),
    upgrade: Option<WebSocketUpgrade>,
) -> Result<Response, ApiError> {
    let req = StreamRequest {
        ns,
        name,
        op: AgentOp::PortForward { port, udp },
        what: "port-forward",
        command: "virtctl port-forward",
        datagrams: udp,
    };
    stream_to_vmi(client, agents, req, upgrade).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_protocols_are_checked() {
        assert_eq!(parse_port("22", None).unwrap(), (22, false));
        assert_eq!(parse_port("80", Some("tcp")).unwrap(), (80, false));
        assert_eq!(parse_port("53", Some("udp")).unwrap(), (53, true));
        for (port, proto) in [
            ("0", None),
            ("x", None),
            ("70000", None),
            ("80", Some("sctp")),
        ] {
            assert!(parse_port(port, proto).is_err(), "{port} {proto:?}");
        }
    }
}
