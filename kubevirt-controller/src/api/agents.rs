//! How the API reaches the node agent of a VMI's node: by address, with the agents' token. The
//! embedded plane knows its one agent's address; on a cluster the agent listens on a port of
//! each node's InternalIP (upstream's virt-handler does the same on 8186).

use std::collections::HashMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tokio::io::BufReader;

use super::status::ApiError;
use crate::node::endpoint::{self, AgentCallError, AgentOp, AgentRequest, AgentTls, Duplex};

/// Where node agents listen.
#[derive(Clone, Debug)]
pub enum Addressing {
    /// Known addresses by node name (the embedded plane's own agent).
    Fixed(HashMap<String, SocketAddr>),
    /// This port on each node's InternalIP (read from its Node object), over TLS if given.
    NodePort {
        /// The port.
        port: u16,
        /// How to verify the agents (`None`: plain TCP).
        tls: Option<AgentTls>,
    },
}

/// The node agents of a cluster.
#[derive(Clone, Debug)]
pub struct NodeAgents {
    /// Where they listen.
    pub addressing: Addressing,
    /// The token they take.
    pub token: String,
}

impl NodeAgents {
    /// One agent for `node` at `address`.
    pub fn single(node: &str, address: SocketAddr, token: String) -> Self {
        Self {
            addressing: Addressing::Fixed(HashMap::from([(node.to_string(), address)])),
            token,
        }
    }

    /// Where the agent of `node` listens.
    ///
    /// # Errors
    /// The node is unknown, or has no InternalIP.
    pub async fn address_of(&self, client: &Client, node: &str) -> Result<SocketAddr, ApiError> {
        match &self.addressing {
            Addressing::Fixed(map) => map.get(node).copied().ok_or_else(|| {
                ApiError::internal(format!("no node agent is known for node {node:?}"))
            }),
            Addressing::NodePort { port, .. } => {
                let nodes: Api<Node> = Api::all(client.clone());
                let n = nodes.get(node).await.map_err(ApiError::from_kube)?;
                let ip = n
                    .status
                    .and_then(|s| s.addresses)
                    .into_iter()
                    .flatten()
                    .find(|a| a.type_ == "InternalIP")
                    .and_then(|a| a.address.parse().ok())
                    .ok_or_else(|| {
                        ApiError::internal(format!("node {node:?} has no InternalIP address"))
                    })?;
                Ok(SocketAddr::new(ip, *port))
            }
        }
    }

    /// Asks the agent of `node` to do `op` for the VMI; for `console` the connection is the
    /// console afterwards.
    pub async fn call(
        &self,
        client: &Client,
        node: &str,
        op: AgentOp,
        vmi: (&str, &str, &str),
    ) -> Result<BufReader<Box<dyn Duplex>>, ApiError> {
        let address = self.address_of(client, node).await?;
        let (namespace, name, uid) = vmi;
        let request = AgentRequest {
            token: self.token.clone(),
            op,
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        };
        let tls = match &self.addressing {
            Addressing::NodePort { tls, .. } => tls.as_ref(),
            Addressing::Fixed(_) => None,
        };
        endpoint::call(address, &request, tls)
            .await
            .map_err(|e| match e {
                AgentCallError::Refused(why) => ApiError::internal(why),
                other => ApiError::internal(other),
            })
    }
}
