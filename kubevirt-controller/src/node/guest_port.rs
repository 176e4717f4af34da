//! Reaching a TCP (or UDP) port of a guest from the node agent: the guest's address (the masquerade
//! binding's fixed 10.0.2.2) exists only inside its launcher's network namespace, so the
//! connection is made from there, on a thread that enters that namespace and ends after. The
//! socket stays in the namespace it was made in; the agent copies bytes to and from it.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::launcher::LAUNCHER_PID;

/// The guest's address behind the masquerade binding (upstream's default, as the launcher sets it).
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// How long the guest has to answer a connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a guest port could not be reached; the messages are what `virtctl port-forward` prints.
#[derive(Debug, thiserror::Error)]
pub enum GuestPortError {
    /// No launcher pid, or its namespace is gone.
    #[error("the VMI's launcher is not running on this node ({0})")]
    NoLauncher(String),
    /// The launcher shares the agent's namespace: the VMI has no pod network.
    #[error(
        "the VMI has no pod network interface (spec.domain.devices.interfaces is empty or autoattachPodInterface is false): there is no guest address to forward to"
    )]
    NoNetwork,
    /// The guest reset the connection attempt.
    #[error("the guest refused a connection to port {0}: nothing listens there")]
    Refused(u16),
    /// No answer in time.
    #[error("the guest did not answer a connection to {GUEST_IP}:{0} within {CONNECT_TIMEOUT:?}")]
    Timeout(u16),
    /// Anything else.
    #[error("connecting to the guest's port {port}: {source}")]
    Io {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A UDP socket in the launcher's namespace connected to UDP `port` of the guest whose launcher
/// runs in `run_dir` (a datagram needs no answer to be sent: nothing is checked beyond the
/// namespace).
pub async fn connect_udp(
    run_dir: &Path,
    port: u16,
) -> Result<tokio::net::UdpSocket, GuestPortError> {
    let ns = launcher_namespace(run_dir, port)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("guest-port".into())
        .spawn(move || {
            let _ = tx.send(enter(&ns, port).and_then(|()| {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                    .and_then(|s| s.connect((GUEST_IP, port)).map(|()| s));
                socket.map_err(|source| GuestPortError::Io { port, source })
            }));
        })
        .map_err(|source| GuestPortError::Io { port, source })?;
    let socket = rx.await.map_err(|_| GuestPortError::Io {
        port,
        source: std::io::Error::other("the connecting thread ended early"),
    })??;
    socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(socket))
        .map_err(|source| GuestPortError::Io { port, source })
}

/// The network namespace of the launcher in `run_dir`, if it is not the agent's own.
fn launcher_namespace(run_dir: &Path, port: u16) -> Result<File, GuestPortError> {
    let pid = std::fs::read_to_string(run_dir.join(LAUNCHER_PID))
        .map_err(|e| GuestPortError::NoLauncher(e.to_string()))?;
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| GuestPortError::NoLauncher("its pid file is malformed".into()))?;
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| GuestPortError::NoLauncher(e.to_string()))?;
    let ours = std::fs::metadata("/proc/self/ns/net")
        .map_err(|source| GuestPortError::Io { port, source })?;
    let theirs = ns
        .metadata()
        .map_err(|source| GuestPortError::Io { port, source })?;
    if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(GuestPortError::NoNetwork);
    }
    Ok(ns)
}

/// Moves this (short-lived) thread into `ns`.
fn enter(ns: &File, port: u16) -> Result<(), GuestPortError> {
    // SAFETY: setns on a descriptor we own; it changes only this thread's network namespace,
    // and the thread ends when its work is done.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let source = std::io::Error::last_os_error();
        return Err(GuestPortError::Io { port, source });
    }
    Ok(())
}

/// Connects to TCP `port` of the guest whose launcher runs in `run_dir`.
pub async fn connect(run_dir: &Path, port: u16) -> Result<tokio::net::TcpStream, GuestPortError> {
    let ns = launcher_namespace(run_dir, port)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("guest-port".into())
        .spawn(move || {
            let _ = tx.send(dial_in(&ns, port));
        })
        .map_err(|source| GuestPortError::Io { port, source })?;
    let stream = rx.await.map_err(|_| GuestPortError::Io {
        port,
        source: std::io::Error::other("the connecting thread ended early"),
    })??;
    stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|source| GuestPortError::Io { port, source })
}

/// On this (short-lived) thread: enters `ns` and connects.
fn dial_in(ns: &File, port: u16) -> Result<TcpStream, GuestPortError> {
    enter(ns, port)?;
    let address = SocketAddr::from((GUEST_IP, port));
    let stream =
        TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => GuestPortError::Refused(port),
            std::io::ErrorKind::TimedOut => GuestPortError::Timeout(port),
            _ => GuestPortError::Io { port, source: e },
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
