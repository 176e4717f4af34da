//! `kubevirt-controller api`: the subresource API on its own, for a cluster's `APIService`
//! (the operator installs it: `crate::operator::components::api`), until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::api::agents::{Addressing, NodeAgents};
use crate::api::serve::{front_proxy_ca, serve_tls, tls_config};
use crate::api::{Authentication, Subresources};
use crate::node::endpoint::AgentTls;

/// Arguments of `kubevirt-controller api`.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where to listen.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// The serving certificate (PEM); the APIService's caBundle must verify it.
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    /// The serving certificate's private key (PEM).
    #[arg(long)]
    pub tls_private_key_file: PathBuf,
    /// The port node agents serve their endpoint on (`kubevirt-controller node --endpoint-listen`).
    #[arg(long, default_value_t = 8186)]
    pub node_agent_port: u16,
    /// A file holding the node agents' token (`--endpoint-token-file` of the agents).
    #[arg(long)]
    pub node_agent_token_file: PathBuf,
    /// The CA (PEM) the node agents' endpoint certificates chain to: reach them over TLS
    /// (without it: plain TCP, for a trusted network only).
    #[arg(long)]
    pub node_agent_ca_file: Option<PathBuf>,
    /// The name the node agents' certificates carry.
    #[arg(long, default_value = crate::node::endpoint::AGENT_SERVER_NAME)]
    pub node_agent_server_name: String,
}

/// The client TLS configuration trusting the CA in `path`.
pub(super) fn agent_tls(path: &std::path::Path, server_name: String) -> Result<AgentTls, CliError> {
    let pem =
        std::fs::read(path).map_err(|e| CliError::Setup(format!("{}: {e}", path.display())))?;
    AgentTls::trusting(&pem, server_name)
        .map_err(|e| CliError::Setup(format!("{}: {e}", path.display())))
}

/// Reads a token file (trimmed); an empty one is refused.
pub(super) fn read_token(path: &std::path::Path) -> Result<String, CliError> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| CliError::Setup(format!("{}: {e}", path.display())))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(CliError::Setup(format!(
            "{}: the token is empty",
            path.display()
        )));
    }
    Ok(token)
}

pub(super) fn run(args: ApiArgs, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    let token = read_token(&args.node_agent_token_file)?;
    let agent_tls = match &args.node_agent_ca_file {
        Some(ca) => Some(agent_tls(ca, args.node_agent_server_name.clone())?),
        None => None,
    };
    super::on_cluster(args.kubeconfig.clone(), |client, server| async move {
        let ca = front_proxy_ca(&client).await;
        let tls = tls_config(
            &args.tls_cert_file,
            &args.tls_private_key_file,
            ca.as_deref(),
        )
        .map_err(|e| CliError::Setup(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let app = Subresources {
            client,
            agents: NodeAgents {
                addressing: Addressing::NodePort {
                    port: args.node_agent_port,
                    tls: agent_tls,
                },
                token,
            },
            authentication: Authentication::Cluster,
        }
        .router();
        writeln!(
            out,
            "kubevirt-controller: subresources.kubevirt.io on https://{} for {server} (front-proxy CA: {})",
            listener.local_addr()?,
            if ca.is_some() {
                "yes"
            } else {
                "none; bearer tokens only"
            }
        )?;
        out.flush()?;
        serve_tls(listener, app, tls, crate::signal::terminated()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
