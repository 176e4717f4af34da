//! The blocking client: one connection per request, one line each way, with a timeout.

use crate::reply::{Done, ReplyError, ShutdownReply, Status, StopReply, decode_reply};
use crate::{CONTROL_SOCKET, Request};
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How long a request may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A launcher's control socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// Why a request got no usable reply.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The socket is not there or nobody listens (the launcher is starting, or gone).
    #[error("connecting to {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the request or reading the reply failed, or took longer than the timeout.
    #[error("talking to {socket}: {source}")]
    Io {
        /// The socket.
        socket: PathBuf,
        /// Why (`WouldBlock`/`TimedOut`: no answer in time).
        #[source]
        source: std::io::Error,
    },
    /// The launcher closed the connection without a reply.
    #[error("{socket}: the launcher closed the connection without replying")]
    NoReply {
        /// The socket.
        socket: PathBuf,
    },
    /// The reply says no, is of another version, or is not a reply.
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

impl ClientError {
    /// The launcher did not answer (not there yet, gone, or too slow), as opposed to answering
    /// something this side cannot use.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::NoReply { .. }
        )
    }
}

impl Client {
    /// The control socket of the launcher running in `run_dir`.
    pub fn for_run_dir(run_dir: &Path) -> Client {
        Client::new(run_dir.join(CONTROL_SOCKET))
    }

    /// The control socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same socket with another timeout per request.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` and decodes its reply as `T`.
    ///
    /// # Errors
    /// [`ClientError`]: the launcher is unreachable, too slow, refused, or speaks another version.
    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ClientError> {
        let io = |source| ClientError::Io {
            socket: self.socket.clone(),
            source,
        };
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut line = request.to_line();
        line.push('\n');
        stream.write_all(line.as_bytes()).map_err(io)?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).map_err(io)?;
        if answer.trim().is_empty() {
            return Err(ClientError::NoReply {
                socket: self.socket.clone(),
            });
        }
        Ok(decode_reply(&answer)?)
    }

    /// [`Request::Status`].
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn status(&self) -> Result<Status, ClientError> {
        self.call(&Request::Status)
    }

    /// [`Request::Shutdown`] with `grace` (`None`: the VMI's own).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn shutdown(&self, grace: Option<Duration>) -> Result<ShutdownReply, ClientError> {
        self.call(&Request::Shutdown {
            grace_period_seconds: grace.map(|g| g.as_secs()),
        })
    }

    /// [`Request::Stop`].
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn stop(&self) -> Result<StopReply, ClientError> {
        self.call(&Request::Stop)
    }

    /// [`Request::Snapshot`] `name` (writing guest RAM takes time: give a client for a large
    /// guest a longer timeout, [`Client::with_timeout`]).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn snapshot(&self, name: &str) -> Result<crate::SnapshotReply, ClientError> {
        self.call(&Request::Snapshot { name: name.into() })
    }

    /// A request that only succeeds or fails: pause, unpause, softReboot, reset.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn act(&self, request: &Request) -> Result<(), ClientError> {
        self.call::<Done>(request).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_ok;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kv-proto-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_launcher_that_never_answers_times_out() {
        let d = dir("silent");
        let listener = UnixListener::bind(d.join(CONTROL_SOCKET)).unwrap();
        let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let client = Client::for_run_dir(&d).with_timeout(Duration::from_millis(200));
        let t = Instant::now();
        let e = client.status().unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        drop(held.join());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_reply_is_decoded_and_a_missing_socket_is_unreachable() {
        let d = dir("answer");
        assert!(
            Client::for_run_dir(&d)
                .status()
                .unwrap_err()
                .is_unreachable()
        );
        let listener = UnixListener::bind(d.join(CONTROL_SOCKET)).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            assert_eq!(Request::decode(&line).unwrap(), Request::Status);
            writeln!(&s, "{}", encode_ok(&Status::default())).unwrap();
        });
        assert_eq!(Client::for_run_dir(&d).status().unwrap(), Status::default());
        server.join().unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
