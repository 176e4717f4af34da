//! A launcher as a live-migration target (`run --incoming ADDR`, `serve --incoming ADDR`):
//! listen at `unix:PATH` or `tcp:IP:PORT`, take one connection from the source launcher, and
//! receive the VM over it (`kubevirt_vmm::VmBuilder::migrate_from`) instead of booting it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use kubevirt_vmm::{Vm, VmBuilder};

use super::RunError;

/// How long a connected source may stay silent before the target gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a target listens, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingAddr {
    /// A Unix socket path.
    Unix(std::path::PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl IncomingAddr {
    /// Parses `unix:PATH` or `tcp:IP:PORT`.
    ///
    /// # Errors
    /// A message saying which form is expected.
    pub fn parse(addr: &str) -> Result<Self, String> {
        if let Some(path) = addr.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            return Ok(IncomingAddr::Unix(path.into()));
        }
        if let Some(tcp) = addr.strip_prefix("tcp:") {
            return tcp
                .parse()
                .map(IncomingAddr::Tcp)
                .map_err(|_| format!("{tcp:?} is not IP:PORT"));
        }
        Err(format!(
            "{addr:?}: an incoming address is unix:PATH or tcp:IP:PORT"
        ))
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn accept(addr: &IncomingAddr) -> io::Result<Conn> {
    let conn = match addr {
        IncomingAddr::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path)?;
            tracing::info!(
                address = %format_args!("unix:{}", path.display()),
                "waiting for the migration source"
            );
            let (s, _) = listener.accept()?;
            let _ = std::fs::remove_file(path);
            s.set_read_timeout(Some(READ_TIMEOUT))?;
            Conn::Unix(s)
        }
        IncomingAddr::Tcp(a) => {
            let listener = TcpListener::bind(a)?;
            tracing::info!(address = %format_args!("tcp:{a}"), "waiting for the migration source");
            let (s, _) = listener.accept()?;
            s.set_read_timeout(Some(READ_TIMEOUT))?;
            s.set_nodelay(true)?;
            Conn::Tcp(s)
        }
    };
    Ok(conn)
}

/// Waits for the source at `addr` and receives the VM into `builder`'s configuration and
/// devices; returns it built, not started.
///
/// # Errors
/// [`RunError::Incoming`] when the address cannot be listened on, [`RunError::Migration`]
/// naming what the stream or the source got wrong.
pub fn receive(builder: VmBuilder, addr: &str) -> Result<Vm, RunError> {
    let parsed = IncomingAddr::parse(addr).map_err(|why| RunError::Incoming {
        addr: addr.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, why),
    })?;
    let mut conn = accept(&parsed).map_err(|source| RunError::Incoming {
        addr: addr.to_string(),
        source,
    })?;
    Ok(builder.migrate_from(&mut conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_what_is_expected() {
        assert_eq!(
            IncomingAddr::parse("unix:/run/m.sock"),
            Ok(IncomingAddr::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            IncomingAddr::parse("tcp:127.0.0.1:4444"),
            Ok(IncomingAddr::Tcp("127.0.0.1:4444".parse().unwrap()))
        );
        assert!(
            IncomingAddr::parse("tcp:localhost:1")
                .unwrap_err()
                .contains("IP:PORT")
        );
        assert!(IncomingAddr::parse("/x").unwrap_err().contains("unix:PATH"));
    }
}
