//! A TCP port for a test's server to listen on.

use std::io;
use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free at the time of asking: the kernel picks it for a
/// listener bound to port 0, and that listener is closed again before this returns.
///
/// It guarantees nothing after that. Another process or a test running in parallel may take
/// the port before the caller binds it (rare: the kernel hands out ephemeral ports in turn), so
/// a server that must not lose the race binds port 0 itself and reports the port it got. It
/// says nothing about other addresses either: a port free on the loopback may be in use on
/// another interface's address.
///
/// # Errors
/// When no socket can be bound on the loopback (no loopback interface, no ports left).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
