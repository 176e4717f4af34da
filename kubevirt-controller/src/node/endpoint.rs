//! The node agent's endpoint (upstream's virt-handler REST server on port 8186): what the
//! subresource API asks of a VMI on this node, over TCP, so the API server never opens a path on
//! its own disk and works the same when the VMI runs on another node.
//!
//! The protocol is the launcher protocol's style: the caller sends one JSON line
//! [`AgentRequest`] (with the agent's token), the agent answers one JSON line
//! (`{"ok": true}` or `{"ok": false, "error": "..."}`). For `console`, after an ok line the
//! connection carries the guest's serial console both ways, raw bytes, until either side closes.
//! One console client per VMI at a time, as upstream: a new one disconnects the one before.
//! For `portForward`, after an ok line the connection carries a TCP connection to the guest's
//! port, made from inside the launcher's network namespace ([`super::guest_port`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kubevirt_launcher_protocol::{CONSOLE_SOCKET, Client, Request};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Notify;

/// The longest request line the endpoint reads.
const MAX_LINE: u64 = 4096;

/// What the endpoint is asked to do with a VMI's launcher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AgentOp {
    /// Attach to the serial console (the connection becomes the console).
    Console,
    /// Pause the vCPUs.
    Pause,
    /// Resume the vCPUs.
    Unpause,
    /// Press the power button and start again once the guest powered off.
    SoftReboot,
    /// Connect to a TCP port of the guest (the connection carries it afterwards), or a UDP
    /// port (the connection carries its datagrams, framed by [`super::datagrams`]).
    PortForward {
        /// The guest's port.
        port: u16,
        /// UDP instead of TCP.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        udp: bool,
    },
    /// Save the guest's memory state (ours): the launcher writes it, the agent moves it into
    /// the node's store ([`super::memory`]) under this name.
    MemorySnapshot {
        /// Its name (a DNS label).
        name: String,
    },
    /// Carry a live migration's stream to the target launcher of this migration on this node
    /// (the connection carries it afterwards): what a source node's agent asks.
    MigrationTarget {
        /// The migration's uid (the target's run directory).
        migration: String,
    },
}

/// How long a launcher may take to write a memory state (guest RAM is written sparse).
const MEMORY_SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// One request to the endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRequest {
    /// The agent's shared secret.
    pub token: String,
    /// What to do.
    pub op: AgentOp,
    /// The VMI's namespace.
    pub namespace: String,
    /// The VMI's name.
    pub name: String,
    /// The VMI's uid (its run directory, and never another VMI of the same name).
    pub uid: String,
}

/// The endpoint's one-line answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReply {
    /// Whether the request was carried out (for `console`: the stream follows).
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where the endpoint finds launchers and what callers must present.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// The node agent's run root (`NodeConfig::run_root`).
    pub run_root: PathBuf,
    /// The token callers must send.
    pub token: String,
}

/// The console connection per VMI uid: a new one notifies the one before to leave.
type Consoles = Arc<Mutex<HashMap<String, (u64, Arc<Notify>)>>>;

/// A connection to or from the endpoint: plain TCP, or TLS over it.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// The server name node agents' certificates carry (`--endpoint-tls-cert-file`) unless the API
/// is told another (`--node-agent-server-name`).
pub const AGENT_SERVER_NAME: &str = "kubevirt-node-agent";

/// Serves the endpoint on `listener` (plain TCP: loopback, or a trusted network) until the task
/// is dropped.
pub async fn serve(listener: TcpListener, config: EndpointConfig) {
    serve_on(listener, config, None).await;
}

/// [`serve`] over TLS (across nodes: the token and the console never cross the network in the
/// clear).
pub async fn serve_tls(
    listener: TcpListener,
    config: EndpointConfig,
    tls: Arc<rustls::ServerConfig>,
) {
    serve_on(listener, config, Some(tokio_rustls::TlsAcceptor::from(tls))).await;
}

async fn serve_on(
    listener: TcpListener,
    config: EndpointConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let config = Arc::new(config);
    let consoles: Consoles = Arc::default();
    let mut next = 0u64;
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        // Console keystrokes are single bytes: no Nagle delay on them.
        let _ = conn.set_nodelay(true);
        next += 1;
        let (config, consoles, id, tls) = (config.clone(), consoles.clone(), next, tls.clone());
        tokio::spawn(async move {
            let conn: Box<dyn Duplex> = match tls {
                None => Box::new(conn),
                Some(acceptor) => match acceptor.accept(conn).await {
                    Ok(c) => Box::new(c),
                    Err(_) => return,
                },
            };
            let _ = handle(conn, &config, &consoles, id).await;
        });
    }
}

async fn reply(
    conn: &mut BufReader<Box<dyn Duplex>>,
    r: Result<(), String>,
) -> std::io::Result<()> {
    let body = match r {
        Ok(()) => AgentReply {
            ok: true,
            error: None,
        },
        Err(e) => AgentReply {
            ok: false,
            error: Some(e),
        },
    };
    let mut line = serde_json::to_string(&body).map_err(std::io::Error::other)?;
    line.push('\n');
    let out = conn.get_mut();
    out.write_all(line.as_bytes()).await?;
    out.flush().await
}

async fn handle(
    conn: Box<dyn Duplex>,
    config: &EndpointConfig,
    consoles: &Consoles,
    id: u64,
) -> std::io::Result<()> {
    let mut conn = BufReader::new(conn);
    let mut line = String::new();
    (&mut conn).take(MAX_LINE).read_line(&mut line).await?;
    let req: AgentRequest = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => return reply(&mut conn, Err(format!("a request is one JSON line: {e}"))).await,
    };
    if !crate::api::auth::constant_time_eq(req.token.as_bytes(), config.token.as_bytes()) {
        return reply(&mut conn, Err("the node agent's token is wrong".into())).await;
    }
    let dir = match run_dir(&config.run_root, &req.namespace, &req.name, &req.uid) {
        Ok(d) => d,
        Err(e) => return reply(&mut conn, Err(e)).await,
    };
    if let AgentOp::PortForward { port, udp: true } = req.op {
        let guest = match super::guest_port::connect_udp(&dir, port).await {
            Ok(g) => g,
            Err(e) => return reply(&mut conn, Err(e.to_string())).await,
        };
        reply(&mut conn, Ok(())).await?;
        relay_datagrams(conn, guest).await;
        return Ok(());
    }
    if let AgentOp::PortForward { port, .. } = req.op {
        let mut guest = match super::guest_port::connect(&dir, port).await {
            Ok(g) => g,
            Err(e) => return reply(&mut conn, Err(e.to_string())).await,
        };
        reply(&mut conn, Ok(())).await?;
        let _ = tokio::io::copy_bidirectional(&mut conn, &mut guest).await;
        return Ok(());
    }
    if let AgentOp::MigrationTarget { migration } = &req.op {
        if !super::migration::plain(migration) {
            let why = format!("migration {migration:?} is not a uid");
            return reply(&mut conn, Err(why)).await;
        }
        let socket = config
            .run_root
            .join(migration)
            .join(crate::migration::INCOMING_SOCKET);
        let target = match UnixStream::connect(&socket).await {
            Ok(t) => t,
            Err(e) => {
                let why = format!("the migration's target launcher is not listening ({e})");
                return reply(&mut conn, Err(why)).await;
            }
        };
        reply(&mut conn, Ok(())).await?;
        // What the target says last (why it refused the stream) reaches the source.
        super::splice::splice(conn, target).await;
        return Ok(());
    }
    if let AgentOp::MemorySnapshot { name } = &req.op {
        let done = memory_snapshot(&dir, config, &req.namespace, name).await;
        return reply(&mut conn, done).await;
    }
    let action = match req.op {
        AgentOp::Console
        | AgentOp::PortForward { .. }
        | AgentOp::MemorySnapshot { .. }
        | AgentOp::MigrationTarget { .. } => None,
        AgentOp::Pause => Some(Request::Pause),
        AgentOp::Unpause => Some(Request::Unpause),
        AgentOp::SoftReboot => Some(Request::SoftReboot),
    };
    if let Some(action) = action {
        let client = Client::for_run_dir(&dir);
        let done = tokio::task::spawn_blocking(move || client.act(&action))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        return reply(&mut conn, done).await;
    }
    let socket = dir.join(CONSOLE_SOCKET);
    let console = match UnixStream::connect(&socket).await {
        Ok(c) => c,
        Err(e) => {
            let why = format!("the VMI's console is not available on this node ({e})");
            return reply(&mut conn, Err(why)).await;
        }
    };
    reply(&mut conn, Ok(())).await?;
    let leave = Arc::new(Notify::new());
    let earlier = lock(consoles).insert(req.uid.clone(), (id, leave.clone()));
    if let Some((_, earlier)) = earlier {
        earlier.notify_one();
    }
    let mut console = console;
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut conn, &mut console) => {}
        _ = leave.notified() => {}
    }
    let mut map = lock(consoles);
    if map.get(&req.uid).is_some_and(|(owner, _)| *owner == id) {
        map.remove(&req.uid);
    }
    Ok(())
}

/// Carries datagrams between the API server's connection (framed) and the guest's UDP port
/// until the connection ends.
async fn relay_datagrams<S>(conn: S, guest: tokio::net::UdpSocket)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let to_guest = async {
        while let Ok(Some(d)) = super::datagrams::read(&mut rd).await {
            // A guest port nothing listens on answers with ICMP: the send after fails; go on.
            let _ = guest.send(&d).await;
        }
    };
    let from_guest = async {
        let mut buf = vec![0u8; super::datagrams::MAX_DATAGRAM];
        loop {
            match guest.recv(&mut buf).await {
                Ok(n) => {
                    if super::datagrams::write(&mut wr, &buf[..n]).await.is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => break,
            }
        }
    };
    tokio::select! {
        _ = to_guest => {}
        _ = from_guest => {}
    }
}

/// Has the launcher in `dir` save its memory state `name` and moves it into the store.
async fn memory_snapshot(
    dir: &Path,
    config: &EndpointConfig,
    namespace: &str,
    name: &str,
) -> Result<(), String> {
    if !kubevirt_launcher_protocol::is_snapshot_name(name) {
        return Err(format!("memory state name {name:?} is not a DNS label"));
    }
    let client = Client::for_run_dir(dir).with_timeout(MEMORY_SNAPSHOT_TIMEOUT);
    let wanted = name.to_string();
    tokio::task::spawn_blocking(move || client.snapshot(&wanted))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the launcher could not save the memory state: {e}"))?;
    super::memory::keep(dir, &config.run_root, namespace, name).map_err(|e| e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The run directory of a VMI below `run_root`: its pod's (`<run_root>/<uid>`, a node agent in
/// pods mode, or the target's a migration moved it to) if there is one, else as [`super::agent::run_dir`] names it; refusing names that
/// are not Kubernetes names (no `/`, no `..`).
pub fn run_dir(run_root: &Path, namespace: &str, name: &str, uid: &str) -> Result<PathBuf, String> {
    let plain = |what: &str, s: &str| {
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !s.starts_with('.');
        if ok {
            Ok(())
        } else {
            Err(format!("{what} {s:?} is not a Kubernetes name"))
        }
    };
    plain("namespace", namespace)?;
    plain("name", name)?;
    if !super::migration::plain(uid) {
        return Err(format!("uid {uid:?} is not a uid"));
    }
    let in_pod = super::migration::active_run_dir(run_root, uid);
    if in_pod.is_dir() {
        return Ok(in_pod);
    }
    Ok(super::agent::run_dir_of(run_root, namespace, name, uid))
}

/// How the API reaches agents over TLS: the CA their certificates chain to, and the name they
/// carry.
#[derive(Clone, Debug)]
pub struct AgentTls {
    /// The client configuration (roots: the agents' CA).
    pub config: Arc<rustls::ClientConfig>,
    /// The server name to verify ([`AGENT_SERVER_NAME`] by default).
    pub server_name: String,
}

impl AgentTls {
    /// Trusting the CA certificates in `pem`, verifying `server_name`.
    pub fn trusting(pem: &[u8], server_name: String) -> Result<AgentTls, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| e.to_string())?;
            roots.add(cert).map_err(|e| e.to_string())?;
        }
        if roots.is_empty() {
            return Err("no PEM certificate".into());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(AgentTls {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// Connects to the endpoint at `address` (over TLS if `tls`), sends `request` and reads the
/// answer line; on success the connection is returned (for `console`, the console), with what
/// was read past the answer.
pub async fn call(
    address: std::net::SocketAddr,
    request: &AgentRequest,
    tls: Option<&AgentTls>,
) -> Result<BufReader<Box<dyn Duplex>>, AgentCallError> {
    let io = |source| AgentCallError::Connect { address, source };
    let conn = TcpStream::connect(address).await.map_err(io)?;
    let _ = conn.set_nodelay(true);
    let conn: Box<dyn Duplex> = match tls {
        None => Box::new(conn),
        Some(t) => {
            let name =
                rustls::pki_types::ServerName::try_from(t.server_name.clone()).map_err(|e| {
                    AgentCallError::Refused(format!("server name {:?}: {e}", t.server_name))
                })?;
            let connector = tokio_rustls::TlsConnector::from(t.config.clone());
            Box::new(connector.connect(name, conn).await.map_err(io)?)
        }
    };
    let mut conn = BufReader::new(conn);
    let mut line = serde_json::to_string(request).map_err(AgentCallError::Encode)?;
    line.push('\n');
    let out = conn.get_mut();
    out.write_all(line.as_bytes()).await.map_err(io)?;
    out.flush().await.map_err(io)?;
    let mut answer = String::new();
    (&mut conn)
        .take(MAX_LINE)
        .read_line(&mut answer)
        .await
        .map_err(io)?;
    let reply: AgentReply = serde_json::from_str(&answer).map_err(|e| {
        AgentCallError::Refused(format!("the node agent answered no JSON line: {e}"))
    })?;
    if !reply.ok {
        return Err(AgentCallError::Refused(reply.error.unwrap_or_default()));
    }
    // The reader keeps what came after the answer line (the console's scroll-back).
    Ok(conn)
}

/// Errors calling a node agent's endpoint.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    /// The agent could not be reached.
    #[error("reaching the node agent at {address}: {source}")]
    Connect {
        /// Its address.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be encoded.
    #[error("encoding the request to the node agent: {0}")]
    Encode(#[source] serde_json::Error),
    /// The agent refused or failed the request.
    #[error("{0}")]
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_refuse_paths_that_leave_the_root() {
        let root = Path::new("/r");
        assert_eq!(
            run_dir(root, "default", "vm1", "abcdef0123").unwrap(),
            Path::new("/r/default/vm1-abcdef01")
        );
        for (ns, name) in [("..", "x"), ("default", "../x"), ("a/b", "x"), ("", "x")] {
            assert!(run_dir(root, ns, name, "u").is_err(), "{ns}/{name}");
        }
    }

    #[test]
    fn a_vmi_in_its_pod_is_found_in_the_launcher_root_by_uid() {
        let root = std::env::temp_dir().join(format!("kv-endpoint-{}", std::process::id()));
        let uid = "0f3c9a2e-1b7d-4c55-9e21-7d0c3b4a5f60";
        let direct = root.join("default").join("vm1-0f3c9a2e");
        assert_eq!(run_dir(&root, "default", "vm1", uid).unwrap(), direct);
        std::fs::create_dir_all(root.join(uid)).unwrap();
        assert_eq!(
            run_dir(&root, "default", "vm1", uid).unwrap(),
            root.join(uid)
        );
        for bad in ["..", "../x", "a/b", ""] {
            assert!(run_dir(&root, "default", "vm1", bad).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
