//! CDI's import and upload paths against the tools a user would otherwise run, in the same run
//! on the same file (issue 15):
//!
//! - **HTTP import of a qcow2**: our importer (`cdi::import::import` from an HTTP source into a
//!   Filesystem claim's `disk.img`, as the `importer-<dv>` pod runs it) against `curl` fetching
//!   the file followed by `qemu-img convert -O raw` (qemu-img cannot read a qcow2 from a pipe:
//!   CDI's importer and this peer both land it on scratch first). Goal: ours ≥ 0.9x the peer.
//! - **Upload of a raw image**: `curl -T` streaming it to our upload server (`cdi::upload::server`,
//!   the `cdi-upload-<dv>` pod's) into `disk.img`, against the same `curl -T` into a plain file
//!   sink (a server that writes what it gets): the same bytes through the same loopback into a
//!   file with no import pipeline. Ours keeps the disk sparse (zeros are not written), the sink
//!   writes every byte.
//!
//! Run: `cargo bench --bench cdi_import` (optionally `-- <virtual MiB> <data MiB> <runs>`;
//! default a 1024 MiB disk holding 512 MiB of incompressible data, 3 runs each). Needs `curl`
//! and `qemu-img` (Debian's curl and qemu-utils; `scripts/setup.sh`); without them it says so
//! and exits 0. Files live in a temporary directory on the same file system as `$TMPDIR`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kubevirt_controller::cdi::import::pipeline::{
    ContentType, ImportRequest, ImportSource, import,
};
use kubevirt_controller::cdi::import::progress::Progress;
use kubevirt_controller::cdi::import::source::http::{HttpOptions, HttpSource};
use kubevirt_controller::cdi::import::target::Target;
use kubevirt_controller::cdi::upload::server::{UploadSettings, router};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Serves `file` for any GET (HTTP/1.1, Content-Length, closed after).
fn serve_file(file: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let file = file.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let mut out = conn;
                let mut f = std::fs::File::open(&file).unwrap();
                let len = f.metadata().unwrap().len();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                if out.write_all(head.as_bytes()).is_ok() {
                    let _ = std::io::copy(&mut f, &mut out);
                }
            });
        }
    });
    port
}

/// Accepts POSTs and writes each body into `sink` (the upload peer's receiver).
fn serve_sink(sink: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            receive(conn, &sink);
        }
    });
    port
}

fn receive(conn: TcpStream, sink: &Path) {
    let mut reader = BufReader::with_capacity(1 << 20, conn.try_clone().unwrap());
    let mut length = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) <= 2 {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut out = std::fs::File::create(sink).unwrap();
    std::io::copy(&mut reader.by_ref().take(length), &mut out).unwrap();
    out.sync_all().unwrap();
    let mut conn = conn;
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// A raw disk of `virtual_mib` whose first `data_mib` are pseudo-random (incompressible), and
/// its qcow2.
fn images(dir: &Path, virtual_mib: u64, data_mib: u64) -> (PathBuf, PathBuf) {
    let raw = dir.join("disk.raw");
    let mut f = std::fs::File::create(&raw).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..data_mib {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.set_len(virtual_mib << 20).unwrap();
    f.sync_all().unwrap();
    let qcow2 = dir.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2));
    (raw, qcow2)
}

fn ours_import(url: &str, claim: &Path, size: u64) -> Duration {
    let _ = std::fs::remove_dir_all(claim);
    std::fs::create_dir_all(claim).unwrap();
    let start = Instant::now();
    let source = HttpSource::new(url, HttpOptions::default()).expect("the HTTP source");
    import(ImportRequest {
        source: ImportSource::Data(Box::new(source)),
        content_type: ContentType::Kubevirt,
        target: Target::Filesystem {
            dir: claim.to_path_buf(),
        },
        requested_size: Some(size),
        filesystem_overhead: 0.0,
        preallocation: false,
        scratch_dir: None,
        checksum: None,
        progress: Progress::new(),
    })
    .expect("import");
    sync(claim);
    start.elapsed()
}

fn peer_import(url: &str, claim: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(claim);
    std::fs::create_dir_all(claim).unwrap();
    let scratch = claim.join("scratch.qcow2");
    let start = Instant::now();
    run(Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&scratch)
        .arg(url));
    run(Command::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-t",
            "writeback",
            "-f",
            "qcow2",
            "-O",
            "raw",
        ])
        .arg(&scratch)
        .arg(claim.join("disk.img")));
    std::fs::remove_file(&scratch).unwrap();
    sync(claim);
    start.elapsed()
}

fn ours_upload(runtime: &tokio::runtime::Runtime, raw: &Path, claim: &Path, size: u64) -> Duration {
    let _ = std::fs::remove_dir_all(claim);
    std::fs::create_dir_all(claim).unwrap();
    let settings = UploadSettings {
        target: Target::Filesystem {
            dir: claim.to_path_buf(),
        },
        content_type: ContentType::Kubevirt,
        requested_size: Some(size),
        filesystem_overhead: 0.0,
        preallocation: false,
        progress: Progress::new(),
    };
    let (done, _finished) = tokio::sync::watch::channel(None);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = runtime.spawn(async move { axum::serve(listener, router(settings, done)).await });
    let start = Instant::now();
    curl_post(raw, &format!("http://127.0.0.1:{port}/v1beta1/upload"));
    sync(claim);
    let took = start.elapsed();
    server.abort();
    took
}

fn peer_upload(raw: &Path, port: u16, sink: &Path) -> Duration {
    let _ = std::fs::remove_file(sink);
    let start = Instant::now();
    curl_post(raw, &format!("http://127.0.0.1:{port}/"));
    start.elapsed()
}

fn curl_post(file: &Path, url: &str) {
    // `-T` streams the file (`--data-binary @file` would read it all into memory first).
    let out = Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "-H",
            "Expect:",
            "-X",
            "POST",
            "-T",
        ])
        .arg(file)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl POST {url}: {out:?}");
}

fn sync(dir: &Path) {
    let _ = Command::new("sync").arg("-f").arg(dir).status();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let virtual_mib = args.first().copied().unwrap_or(1024);
    let data_mib = args.get(1).copied().unwrap_or(512).min(virtual_mib);
    let runs = args.get(2).copied().unwrap_or(3).max(1) as usize;
    for tool in ["curl", "qemu-img"] {
        if !have(tool) {
            println!("cdi_import: skipped: no {tool} (scripts/setup.sh installs it)");
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("kv-bench-cdi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (raw, qcow2) = images(&dir, virtual_mib, data_mib);
    let size = virtual_mib << 20;
    let url = format!("http://127.0.0.1:{}/disk.qcow2", serve_file(qcow2.clone()));
    let claim = dir.join("claim");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    println!(
        "cdi_import: a {virtual_mib} MiB disk holding {data_mib} MiB of data ({} MiB as qcow2), {runs} runs each, medians",
        std::fs::metadata(&qcow2).unwrap().len() >> 20
    );
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        peer.push(peer_import(&url, &claim));
        ours.push(ours_import(&url, &claim, size));
    }
    let (o, p) = (median(ours), median(peer));
    println!(
        "  http qcow2 import   ours {:>7.2} s   curl + qemu-img convert {:>7.2} s   ours/peer speed {:.2}x (goal >= 0.9x)",
        o.as_secs_f64(),
        p.as_secs_f64(),
        p.as_secs_f64() / o.as_secs_f64()
    );

    let sink_port = serve_sink(dir.join("sink"));
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        peer.push(peer_upload(&raw, sink_port, &dir.join("sink")));
        ours.push(ours_upload(&runtime, &raw, &claim, size));
    }
    let (o, p) = (median(ours), median(peer));
    let mib = |d: Duration| (virtual_mib as f64) / d.as_secs_f64();
    println!(
        "  raw upload          ours {:>7.2} s ({:.0} MiB/s)   curl into a file sink {:>7.2} s ({:.0} MiB/s)   ours/peer speed {:.2}x",
        o.as_secs_f64(),
        mib(o),
        p.as_secs_f64(),
        mib(p),
        p.as_secs_f64() / o.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
