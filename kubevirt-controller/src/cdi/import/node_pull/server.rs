//! `kubevirt-controller cdi-containerimage-server`: upstream's `cdi-containerimage-server`, run
//! in the user's image by a node-pull import. It serves the one file under `--image-dir` at
//! [`DISK_PATH`](super::DISK_PATH) (`GET` and `HEAD`, plain HTTP on the pod's loopback), creates
//! `--ready-file` once it listens and exits 0 when `--done-file` appears. An image without
//! exactly one file there is an error in the termination message (exit 1).
//!
//! With `--install-to DIR` it instead copies itself, its loader and libraries into `DIR`
//! ([`super::bundle`]): the importer pod's `init` container.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use thiserror::Error;

use super::{DISK_PATH, DONE_FILE, IMAGE_DIR, READY_FILE, SERVER_PORT};
use crate::cdi::import::termination;

/// Arguments of `kubevirt-controller cdi-containerimage-server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Copy this binary, its loader and libraries into DIR and exit (the init container).
    #[arg(long, value_name = "DIR")]
    pub install_to: Option<PathBuf>,
    /// The port to serve on (127.0.0.1).
    #[arg(long, short = 'p', default_value_t = SERVER_PORT)]
    pub port: u16,
    /// The directory holding the disk image (one file).
    #[arg(long, default_value = IMAGE_DIR)]
    pub image_dir: PathBuf,
    /// Created once the server listens.
    #[arg(long, default_value = READY_FILE)]
    pub ready_file: PathBuf,
    /// The server exits when this file appears.
    #[arg(long, default_value = DONE_FILE)]
    pub done_file: PathBuf,
    /// Where a failure is written.
    #[arg(long, default_value = termination::DEFAULT_TERMINATION_LOG)]
    pub termination_log: PathBuf,
}

/// Why the server cannot serve.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The image directory cannot be read.
    #[error(
        "reading the image directory {dir}: {source} (the image must hold its disk under {dir})"
    )]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No file in the image directory.
    #[error("no disk image file in {0}: the image must hold exactly one file there")]
    NoDisk(PathBuf),
    /// Several files in the image directory.
    #[error(
        "image directory {dir} contains more than one file ({names}): the image must hold exactly one"
    )]
    SeveralDisks {
        /// The directory.
        dir: PathBuf,
        /// The files' names.
        names: String,
    },
    /// Listening or creating the ready file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

/// Runs the command.
pub fn run(args: &ServerArgs) -> ExitCode {
    if let Some(dir) = &args.install_to {
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!("error: this binary's path: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match super::bundle::install(&exe, dir) {
            Ok(names) => {
                tracing::info!(dir = %dir.display(), ?names, "installed the server");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                let _ = termination::write(&args.termination_log, &e.to_string());
                ExitCode::FAILURE
            }
        };
    }
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            let _ = termination::write(&args.termination_log, &e.to_string());
            ExitCode::FAILURE
        }
    }
}

/// The one regular file directly under `dir`.
pub fn find_disk(dir: &Path) -> Result<PathBuf, ServeError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ServeError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    match files.len() {
        0 => Err(ServeError::NoDisk(dir.to_path_buf())),
        1 => Ok(files.remove(0)),
        _ => Err(ServeError::SeveralDisks {
            dir: dir.to_path_buf(),
            names: files
                .iter()
                .filter_map(|f| f.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Serves until the done file appears.
pub fn serve(args: &ServerArgs) -> Result<(), ServeError> {
    let disk = find_disk(&args.image_dir)?;
    let io = |what: String| move |source| ServeError::Io { what, source };
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
        .map_err(io(format!("listening on 127.0.0.1:{}", args.port)))?;
    tracing::info!(disk = %disk.display(), port = args.port, "serving the image's disk");
    std::fs::File::create(&args.ready_file).map_err(io(format!(
        "creating the ready file {}",
        args.ready_file.display()
    )))?;
    let done = args.done_file.clone();
    std::thread::spawn(move || {
        while !done.exists() {
            std::thread::sleep(Duration::from_millis(200));
        }
        tracing::info!("the import is done: exiting");
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let disk = disk.clone();
                std::thread::spawn(move || {
                    if let Err(e) = answer(stream, &disk) {
                        tracing::warn!("answering a request: {e}");
                    }
                });
            }
            Err(e) => tracing::warn!("accepting a connection: {e}"),
        }
    }
    Ok(())
}

/// Answers one request (the connection is closed after it).
fn answer(stream: TcpStream, disk: &Path) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are not needed; read them so the client sees a clean close.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = stream;
    let status = |out: &mut TcpStream, code: &str| {
        write!(
            out,
            "HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    if method != "GET" && method != "HEAD" {
        return status(&mut out, "405 Method Not Allowed");
    }
    if path.split('?').next() != Some(DISK_PATH) {
        return status(&mut out, "404 Not Found");
    }
    let mut file = std::fs::File::open(disk)?;
    let len = file.metadata()?.len();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )?;
    if method == "GET" {
        io::copy(&mut file, &mut out)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn exactly_one_file_is_the_disk() {
        let dir = kubevirt_testsupport::tempdir("cis");
        let e = find_disk(&dir.path().join("disk")).unwrap_err().to_string();
        assert!(e.contains("reading the image directory"), "{e}");
        std::fs::create_dir(dir.path().join("disk")).unwrap();
        std::fs::create_dir(dir.path().join("disk/sub")).unwrap();
        let e = find_disk(&dir.path().join("disk")).unwrap_err().to_string();
        assert!(e.contains("no disk image file"), "{e}");
        std::fs::write(dir.path().join("disk/a.qcow2"), b"x").unwrap();
        assert_eq!(
            find_disk(&dir.path().join("disk")).unwrap(),
            dir.path().join("disk/a.qcow2")
        );
        std::fs::write(dir.path().join("disk/b.img"), b"x").unwrap();
        let e = find_disk(&dir.path().join("disk")).unwrap_err().to_string();
        assert!(e.contains("more than one file (a.qcow2, b.img)"), "{e}");
    }

    fn get(port: u16, request: &str) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn the_disk_is_served_the_ready_file_made_and_done_is_watched() {
        let dir = kubevirt_testsupport::tempdir("cis");
        std::fs::create_dir(dir.path().join("disk")).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("disk/x.qcow2"), &data).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = ServerArgs {
            install_to: None,
            port,
            image_dir: dir.path().join("disk"),
            ready_file: dir.path().join("ready"),
            done_file: dir.path().join("never"),
            termination_log: dir.path().join("log"),
        };
        std::thread::spawn(move || serve(&args));
        kubevirt_testsupport::eventually("the ready file", || {
            dir.path().join("ready").exists().then_some(())
        });
        let answer = get(port, "GET /disk.img HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&answer[..split]);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("Content-Length: 100000"), "{head}");
        assert_eq!(&answer[split..], &data[..]);
        let head = get(port, "HEAD /disk.img HTTP/1.1\r\n\r\n");
        assert!(String::from_utf8_lossy(&head).contains("Content-Length: 100000"));
        assert!(head.ends_with(b"\r\n\r\n"));
        let other = get(port, "GET /etc/passwd HTTP/1.1\r\n\r\n");
        assert!(String::from_utf8_lossy(&other).starts_with("HTTP/1.1 404"));
        let post = get(port, "POST /disk.img HTTP/1.1\r\n\r\n");
        assert!(String::from_utf8_lossy(&post).starts_with("HTTP/1.1 405"));
    }
}
