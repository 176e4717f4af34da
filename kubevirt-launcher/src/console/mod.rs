//! The serial console on a unix socket, as `virtctl console` needs it: any number of readers, one
//! writer at a time, a scroll-back buffer so a late client sees what the guest already printed,
//! and an optional log file (upstream's `logSerialConsole`), rotated past 4 MiB ([`log`]).
//! [`follow`] prints such a log as it grows (`kubevirt-launcher console-log`).
//!
//! The hub reads the guest's console from a pipe the VMM writes to, so it is decoupled from the
//! VMM: it only needs a readable fd and a function that delivers input to the guest.

pub mod follow;
pub mod log;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;

/// How much output a new client gets replayed.
pub const SCROLLBACK: usize = 64 * 1024;
/// Chunks of output queued for one reader before it counts as not keeping up (the guest prints
/// byte by byte, so a chunk is often one byte; a reader that reads at all never gets near this).
const READER_QUEUE: usize = 4096;

/// Delivers console input to the guest.
pub type InputSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

struct Shared {
    scrollback: VecDeque<u8>,
    /// One queue per reader, drained by the reader's own thread: a reader that stops
    /// reading never stalls the others or the guest, it is dropped when its queue is full.
    readers: Vec<SyncSender<Arc<[u8]>>>,
    writer: Option<u64>,
    log: Option<log::RotatingLog>,
    echo: bool,
    pumped: u64,
}

/// A running console hub.
pub struct ConsoleHub {
    socket: PathBuf,
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for ConsoleHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleHub")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConsoleHub {
    /// Serve the console read from `output` on a unix socket at `socket`; input from the current
    /// writer goes to `input`; everything is also appended to `log` if given.
    pub fn start(
        output: impl Read + Send + 'static,
        socket: &Path,
        input: InputSink,
        log: Option<&Path>,
    ) -> io::Result<Self> {
        Self::start_with_echo(output, socket, input, log, false)
    }

    /// [`ConsoleHub::start`], also copying the console to this process's stdout when `echo`.
    pub fn start_with_echo(
        output: impl Read + Send + 'static,
        socket: &Path,
        input: InputSink,
        log: Option<&Path>,
        echo: bool,
    ) -> io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let log = log
            .map(|p| log::RotatingLog::open(p, log::LOG_LIMIT))
            .transpose()?;
        let shared = Arc::new(Mutex::new(Shared {
            scrollback: VecDeque::new(),
            readers: Vec::new(),
            writer: None,
            log,
            echo,
            pumped: 0,
        }));
        let pump = shared.clone();
        thread::Builder::new()
            .name("console-out".into())
            .spawn(move || {
                crate::confine::enter(crate::confine::ThreadKind::Console);
                pump_output(output, &pump)
            })?;
        let accept = shared.clone();
        thread::Builder::new()
            .name("console-accept".into())
            .spawn(move || {
                crate::confine::enter(crate::confine::ThreadKind::Console);
                for (id, conn) in (1u64..).zip(listener.incoming()) {
                    let Ok(conn) = conn else { continue };
                    let (shared, input) = (accept.clone(), input.clone());
                    let _ = thread::Builder::new()
                        .name("console-client".into())
                        .spawn(move || client(id, conn, &shared, &input));
                }
            })?;
        Ok(Self {
            socket: socket.to_path_buf(),
            shared,
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Wait until `total` bytes of console output have been delivered (logged, echoed, sent to
    /// readers), or `timeout` passes: so nothing the guest printed last is lost when the launcher
    /// exits right after the guest.
    pub fn wait_for(&self, total: u64, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while lock(&self.shared).pumped < total {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }

    /// What the guest printed recently (the scroll-back).
    pub fn recent(&self) -> Vec<u8> {
        lock(&self.shared).scrollback.iter().copied().collect()
    }
}

fn pump_output(mut output: impl Read, shared: &Mutex<Shared>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match output.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut s = lock(shared);
        s.scrollback.extend(&buf[..n]);
        let excess = s.scrollback.len().saturating_sub(SCROLLBACK);
        s.scrollback.drain(..excess);
        if let Some(log) = s.log.as_mut() {
            let _ = log.write(&buf[..n]);
        }
        if s.echo {
            let mut out = io::stdout().lock();
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
        // A reader that cannot keep up (or is gone) is dropped rather than stalling the guest.
        let chunk: Arc<[u8]> = Arc::from(&buf[..n]);
        s.readers.retain(|r| {
            !matches!(
                r.try_send(chunk.clone()),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
            )
        });
        s.pumped += n as u64;
    }
}

fn client(id: u64, mut conn: UnixStream, shared: &Mutex<Shared>, input: &InputSink) {
    {
        let Ok(mut out) = conn.try_clone() else {
            return;
        };
        let (tx, rx) = sync_channel::<Arc<[u8]>>(READER_QUEUE);
        let mut s = lock(shared);
        let history: Arc<[u8]> = s.scrollback.iter().copied().collect::<Vec<u8>>().into();
        if tx.try_send(history).is_err() {
            return;
        }
        s.readers.push(tx);
        // The reader's own writer: blocking writes here stall nobody else.
        let spawned = thread::Builder::new()
            .name("console-reader".into())
            .spawn(move || {
                for chunk in rx {
                    if out.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        if spawned.is_err() {
            return;
        }
    }
    let mut buf = [0u8; 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mine = {
            let mut s = lock(shared);
            match s.writer {
                None => {
                    s.writer = Some(id);
                    true
                }
                Some(w) => w == id,
            }
        };
        if mine {
            input(&buf[..n]);
        } else {
            let _ = conn.write_all(b"\r\n[kubevirt-rs] another client is typing on this console; this one is read-only\r\n");
        }
    }
    let mut s = lock(shared);
    if s.writer == Some(id) {
        s.writer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::BufRead;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn read_until(conn: &mut UnixStream, needle: &str) -> String {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&got).contains(needle) {
            let n = conn.read(&mut buf).expect("console output in time");
            assert!(
                n > 0,
                "console closed before {needle:?}: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[test]
    fn readers_share_output_and_one_writer_types() {
        let dir = kubevirt_testsupport::tempdir("console");
        let (out_read, mut out_write) = std::io::pipe().unwrap();
        let typed = Arc::new(Mutex::new(Vec::new()));
        let sink = typed.clone();
        let hub = ConsoleHub::start(
            out_read,
            &dir.join("console.sock"),
            Arc::new(move |b: &[u8]| sink.lock().unwrap().extend_from_slice(b)),
            Some(&dir.join("console.log")),
        )
        .unwrap();
        out_write.write_all(b"boot banner\n").unwrap();
        let mut a = UnixStream::connect(hub.socket()).unwrap();
        assert!(
            read_until(&mut a, "boot banner").contains("boot banner"),
            "scroll-back replayed"
        );
        let mut b = UnixStream::connect(hub.socket()).unwrap();
        read_until(&mut b, "boot banner");
        out_write.write_all(b"login: ").unwrap();
        read_until(&mut a, "login: ");
        read_until(&mut b, "login: ");
        a.write_all(b"root\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        b.write_all(b"intruder\n").unwrap();
        assert!(read_until(&mut b, "read-only").contains("another client"));
        assert_eq!(typed.lock().unwrap().as_slice(), b"root\n");
        let log = std::io::BufReader::new(File::open(dir.join("console.log")).unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(log, "boot banner");
        drop(a);
        std::thread::sleep(Duration::from_millis(100));
        b.write_all(b"now me\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            typed.lock().unwrap().as_slice(),
            b"root\nnow me\n",
            "the writer role passes on when the writer leaves"
        );
    }

    /// A client that connects and never reads must not stall the guest (the VMM blocks on a
    /// full console pipe) nor the clients that do read.
    #[test]
    fn a_reader_that_never_reads_stalls_nothing() {
        let dir = kubevirt_testsupport::tempdir("console-slow");
        let (out_read, mut out_write) = std::io::pipe().unwrap();
        let hub = ConsoleHub::start(
            out_read,
            &dir.join("console.sock"),
            Arc::new(|_: &[u8]| {}),
            None,
        )
        .unwrap();
        let _silent = UnixStream::connect(hub.socket()).unwrap();
        let mut reading = UnixStream::connect(hub.socket()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // Byte by byte, as a guest prints: far more chunks than a socket buffer holds.
        let total = 20_000u64;
        let writer = std::thread::spawn(move || {
            for i in 0..total {
                out_write.write_all(&[b'a' + (i % 26) as u8]).unwrap();
                if i % 64 == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            out_write.write_all(b"END").unwrap();
        });
        let got = read_until(&mut reading, "END");
        writer.join().unwrap();
        assert!(
            hub.wait_for(total + 3, Duration::from_secs(10)),
            "the pump kept going"
        );
        assert_eq!(
            got.len() as u64,
            total + 3,
            "the reading client got everything"
        );
    }
}
