//! The upload server of a `cdi-upload-<dv>` pod: `POST /v1beta1/upload` (or `upload-async`)
//! streams the body through the importer's pipeline into the claim. One upload at a time; a
//! failed one may be retried (nothing half-written is left as the disk); after a successful
//! one the server reports the outcome and the pod's process ends.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::StreamExt;
use tokio::sync::watch;

use super::UPLOAD_PATHS;
use super::channel::{self, ChannelSource};
use crate::cdi::import::pipeline::{ContentType, ImportRequest, ImportSource, import};
use crate::cdi::import::progress::Progress;
use crate::cdi::import::target::Target;
use crate::cdi::import::termination;

/// What an upload is imported as.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Where it goes.
    pub target: Target,
    /// What it is.
    pub content_type: ContentType,
    /// The disk's size (the claim's request).
    pub requested_size: Option<u64>,
    /// The filesystem's share of a Filesystem claim.
    pub filesystem_overhead: f64,
    /// Allocate every block.
    pub preallocation: bool,
    /// Raised as the import goes.
    pub progress: Progress,
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Ready for an upload.
    Waiting,
    /// An upload is being received.
    Receiving,
    /// An upload succeeded: this termination message.
    Done(String),
}

#[derive(Clone)]
struct Shared {
    settings: UploadSettings,
    phase: Arc<Mutex<Phase>>,
    done: watch::Sender<Option<String>>,
}

/// The server's routes; `done` is told the termination message of the upload that succeeded.
pub fn router(settings: UploadSettings, done: watch::Sender<Option<String>>) -> Router {
    let shared = Shared {
        settings,
        phase: Arc::new(Mutex::new(Phase::Waiting)),
        done,
    };
    let mut app = Router::new().route("/healthz", get(|| async { "OK" }));
    for path in UPLOAD_PATHS {
        app = app.route(path, any(upload));
    }
    app.with_state(shared)
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], body.into()).into_response()
}

async fn upload(State(s): State<Shared>, req: Request) -> Response {
    if !matches!(req.method().as_str(), "POST" | "PUT") {
        return text(StatusCode::METHOD_NOT_ALLOWED, "upload with POST or PUT\n");
    }
    {
        let mut phase = s.phase.lock().unwrap_or_else(|e| e.into_inner());
        match &*phase {
            Phase::Waiting => *phase = Phase::Receiving,
            Phase::Receiving => {
                return text(StatusCode::CONFLICT, "an upload is already in progress\n");
            }
            Phase::Done(_) => {
                return text(StatusCode::CONFLICT, "the data was already uploaded\n");
            }
        }
    }
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (tx, source) = channel::pair(length);
    let settings = s.settings.clone();
    let job = tokio::task::spawn_blocking(move || run_import(settings, source));
    let mut body = req.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let item = chunk.map_err(std::io::Error::other);
        let failed = item.is_err();
        // The pipeline stopped reading (it failed): its error is the answer.
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let outcome = job
        .await
        .unwrap_or_else(|e| Err(format!("the import stopped: {e}")));
    let mut phase = s.phase.lock().unwrap_or_else(|e| e.into_inner());
    match outcome {
        Ok(message) => {
            *phase = Phase::Done(message.clone());
            let _ = s.done.send(Some(message));
            text(StatusCode::OK, "")
        }
        Err(message) => {
            // Nothing half-written stays: another upload may follow.
            *phase = Phase::Waiting;
            tracing::warn!("upload failed: {message}");
            text(StatusCode::BAD_REQUEST, format!("{message}\n"))
        }
    }
}

fn run_import(settings: UploadSettings, source: ChannelSource) -> Result<String, String> {
    let request = ImportRequest {
        source: ImportSource::Data(Box::new(source)),
        content_type: settings.content_type,
        target: settings.target,
        requested_size: settings.requested_size,
        filesystem_overhead: settings.filesystem_overhead,
        preallocation: settings.preallocation,
        scratch_dir: None,
        checksum: None,
        progress: settings.progress,
    };
    import(request)
        .map(|o| termination::success(o.preallocation_applied))
        .map_err(|e| termination::failure(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, out.split_once("\r\n\r\n").unwrap().1.to_string())
    }

    fn qcow2_with_marker(dir: &Path, virtual_size: u64) -> Vec<u8> {
        let raw = dir.join("src.raw");
        let mut data = vec![0u8; 1 << 20];
        data[4096..4096 + 13].copy_from_slice(b"upload marker");
        std::fs::write(&raw, &data).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.set_len(virtual_size).unwrap();
        let qcow2 = dir.join("src.qcow2");
        let ok = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow2)
            .status()
            .unwrap()
            .success();
        assert!(ok, "qemu-img convert");
        std::fs::read(qcow2).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_fills_the_claim_once_and_a_refused_one_can_be_retried() {
        if !Path::new("/usr/bin/qemu-img").exists() {
            eprintln!("skipped: no qemu-img (Debian's qemu-utils)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("kv-upload-{}", std::process::id()));
        let claim = dir.join("claim");
        std::fs::create_dir_all(&claim).unwrap();
        let settings = UploadSettings {
            target: Target::Filesystem { dir: claim.clone() },
            content_type: ContentType::Kubevirt,
            requested_size: Some(8 << 20),
            filesystem_overhead: 0.0,
            preallocation: false,
            progress: Progress::new(),
        };
        let (done, finished) = watch::channel(None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(settings, done)).await });

        // Larger than the claim: refused with both sizes, nothing left as the disk.
        let (code, body) = post(addr, "/v1beta1/upload", &qcow2_with_marker(&dir, 64 << 20)).await;
        assert_eq!(code, 400, "{body}");
        assert!(!claim.join("disk.img").exists());
        assert!(finished.borrow().is_none());

        let (code, body) = post(addr, "/v1beta1/upload", &qcow2_with_marker(&dir, 4 << 20)).await;
        assert_eq!(code, 200, "{body}");
        let disk = std::fs::read(claim.join("disk.img")).unwrap();
        assert_eq!(&disk[4096..4096 + 13], b"upload marker");
        assert!(
            finished
                .borrow()
                .as_deref()
                .is_some_and(|m| m.contains("Import Complete"))
        );
        let (code, _) = post(addr, "/v1beta1/upload-async", b"again").await;
        assert_eq!(code, 409);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
