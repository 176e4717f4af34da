//! The node agent's endpoint (upstream's virt-handler REST server on port 8186): what the
//! subresource API asks of a VMI on this node, over TCP, so the API server never opens a path on
//! its own disk and works the same when the VMI runs on another node.
//!
//! The protocol is the launcher protocol's style: the caller sends one JSON line
//! [`AgentRequest`] (with the agent's token), the agent answers one JSON line
//! (`{"ok": true}` or `{"ok": false, "error": "..."}`). For `console`, after an ok line the
//! connection carries the guest's serial console both ways, raw bytes, until either side closes.
//! One console client per VMI at a time, as upstream: a new one disconnects the one before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kubevirt_launcher_protocol::{CONSOLE_SOCKET, Client, Request};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Notify;

/// The longest request line the endpoint reads.
const MAX_LINE: u64 = 4096;

/// What the endpoint is asked to do with a VMI's launcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

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

/// Serves the endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: EndpointConfig) {
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
        let (config, consoles, id) = (config.clone(), consoles.clone(), next);
        tokio::spawn(async move {
            let _ = handle(conn, &config, &consoles, id).await;
        });
    }
}

async fn reply(conn: &mut BufReader<TcpStream>, r: Result<(), String>) -> std::io::Result<()> {
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
    conn.get_mut().write_all(line.as_bytes()).await
}

async fn handle(
    conn: TcpStream,
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
    let action = match req.op {
        AgentOp::Console => None,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The run directory of a VMI below `run_root` (as [`super::agent::run_dir`] names it), refusing
/// names that are not Kubernetes names (no `/`, no `..`).
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
    plain("uid", uid)?;
    Ok(super::agent::run_dir_of(run_root, namespace, name, uid))
}

/// Connects to the endpoint at `address`, sends `request` and reads the answer line; on success
/// the connection is returned (for `console`, the console), with what was read past the answer.
pub async fn call(
    address: std::net::SocketAddr,
    request: &AgentRequest,
) -> Result<BufReader<TcpStream>, AgentCallError> {
    let conn = TcpStream::connect(address)
        .await
        .map_err(|source| AgentCallError::Connect { address, source })?;
    let _ = conn.set_nodelay(true);
    let mut conn = BufReader::new(conn);
    let mut line = serde_json::to_string(request).map_err(AgentCallError::Encode)?;
    line.push('\n');
    conn.get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|source| AgentCallError::Connect { address, source })?;
    let mut answer = String::new();
    (&mut conn)
        .take(MAX_LINE)
        .read_line(&mut answer)
        .await
        .map_err(|source| AgentCallError::Connect { address, source })?;
    let reply: AgentReply =
        serde_json::from_str(&answer).map_err(|e| AgentCallError::Refused(e.to_string()))?;
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
}
