//! Console backends: where the guest's serial output goes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Where a serial port's output goes, as configured.
#[derive(Debug)]
pub enum ConsoleConfig {
    /// Appended to a file (created if missing).
    File(PathBuf),
    /// Written to an open file descriptor: a pipe, a pty, stdout.
    Fd(OwnedFd),
    /// Served on a Unix socket the VMM listens on (created, replacing a stale socket file);
    /// one client at a time sees output from when it connects, as with KubeVirt's serial console
    /// socket. Output with no client connected, or that the client does not keep up with, is
    /// dropped rather than stalling the guest.
    UnixSocket(PathBuf),
    /// Kept in memory: for embedding programs and tests.
    Buffer(ConsoleBuffer),
    /// Discarded.
    Sink,
}

/// A shared in-memory console capture.
#[derive(Clone, Debug, Default)]
pub struct ConsoleBuffer(Arc<Mutex<Vec<u8>>>);

impl ConsoleBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything written so far, lossily decoded as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }
}

/// Errors opening a console backend.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The output file could not be opened.
    #[error("opening console file {path}: {source}")]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The socket could not be bound.
    #[error("listening on console socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// An opened console backend: the `Write` the serial device drives.
#[derive(Debug)]
pub enum ConsoleOutput {
    /// A file or file descriptor.
    File(File),
    /// A listening Unix socket and its current client.
    Socket(SocketConsole),
    /// An in-memory buffer.
    Buffer(ConsoleBuffer),
    /// Nowhere.
    Sink,
}

impl Default for ConsoleOutput {
    /// [`ConsoleOutput::Sink`].
    fn default() -> Self {
        ConsoleOutput::Sink
    }
}

impl ConsoleOutput {
    /// Opens `config`.
    pub fn open(config: ConsoleConfig) -> Result<Self, ConsoleError> {
        Ok(match config {
            ConsoleConfig::File(path) => ConsoleOutput::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| ConsoleError::OpenFile { path, source })?,
            ),
            ConsoleConfig::Fd(fd) => ConsoleOutput::File(File::from(fd)),
            ConsoleConfig::UnixSocket(path) => ConsoleOutput::Socket(SocketConsole::bind(&path)?),
            ConsoleConfig::Buffer(buffer) => ConsoleOutput::Buffer(buffer),
            ConsoleConfig::Sink => ConsoleOutput::Sink,
        })
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ConsoleOutput::File(f) => f.write(buf),
            ConsoleOutput::Socket(s) => s.write(buf),
            ConsoleOutput::Buffer(b) => {
                b.0.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            ConsoleOutput::Sink => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ConsoleOutput::File(f) => f.flush(),
            _ => Ok(()),
        }
    }
}

/// A Unix-socket console: accepts a client lazily, drops output nobody reads.
#[derive(Debug)]
pub struct SocketConsole {
    listener: UnixListener,
    client: Option<UnixStream>,
}

impl SocketConsole {
    fn bind(path: &Path) -> Result<Self, ConsoleError> {
        let bind_err = |source| ConsoleError::Bind {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(SocketConsole {
            listener,
            client: None,
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.client.is_none()
            && let Ok((stream, _)) = self.listener.accept()
        {
            stream.set_nonblocking(true)?;
            self.client = Some(stream);
        }
        if let Some(client) = &mut self.client {
            match client.write(buf) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Gone: forget it and wait for the next client.
                Err(_) => self.client = None,
            }
        }
        Ok(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn buffer_collects_output() {
        let buf = ConsoleBuffer::new();
        let mut out = ConsoleOutput::open(ConsoleConfig::Buffer(buf.clone())).unwrap();
        out.write_all(b"hi").unwrap();
        assert_eq!(buf.text(), "hi");
    }

    #[test]
    fn file_backend_appends() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("console.log");
        std::fs::write(&path, b"old ").unwrap();
        let mut out = ConsoleOutput::open(ConsoleConfig::File(path.clone())).unwrap();
        out.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old new");
    }

    #[test]
    fn unopenable_file_names_the_path() {
        let err =
            ConsoleOutput::open(ConsoleConfig::File("/nonexistent-dir/x".into())).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x"));
    }

    #[test]
    fn pipe_backend_writes_to_the_fd() {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let mut out = ConsoleOutput::open(ConsoleConfig::Fd(writer.into())).unwrap();
        out.write_all(b"pipe").unwrap();
        drop(out);
        let mut s = String::new();
        reader.read_to_string(&mut s).unwrap();
        assert_eq!(s, "pipe");
    }

    #[test]
    fn socket_backend_serves_a_client_and_survives_it_leaving() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("serial.sock");
        let mut out = ConsoleOutput::open(ConsoleConfig::UnixSocket(path.clone())).unwrap();
        out.write_all(b"nobody hears this").unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        out.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        drop(client);
        out.write_all(b"after").unwrap();
        out.write_all(b"still fine").unwrap();
    }
}
