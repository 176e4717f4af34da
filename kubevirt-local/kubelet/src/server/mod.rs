//! The kubelet's own HTTP endpoint (its port is the Node's `daemonEndpoints.kubeletEndpoint`),
//! which the API server proxies `pods/log` to: `/containerLogs/{namespace}/{pod}/{container}`
//! with `follow`, `tailLines`, `previous` and `timestamps`, read from the CRI log files; and
//! `/exec|attach/{namespace}/{pod}/{container}` and `/portForward/{namespace}/{pod}[/{uid}]`,
//! redirected to the runtime's streaming server.
//! Plain HTTP on loopback: only this host (the API server) reaches it.

pub mod exec;
mod logs;
pub mod portforward;

pub use logs::{LogError, LogOptions, read_log, render};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

/// How often a followed log is checked for more lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Logs {
    dir: PathBuf,
    cri: crate::cri::Cri,
}

/// Binds `listen` and serves the kubelet's endpoints until `stop` turns true; returns the bound
/// address.
pub async fn serve(
    listen: SocketAddr,
    logs_dir: PathBuf,
    cri: crate::cri::Cri,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route(
            "/exec/{ns}/{pod}/{container}",
            get(streaming::<true>).post(streaming::<true>),
        )
        .route(
            "/attach/{ns}/{pod}/{container}",
            get(streaming::<false>).post(streaming::<false>),
        )
        .route(
            "/portForward/{ns}/{pod}",
            get(port_forward).post(port_forward),
        )
        .route(
            "/portForward/{ns}/{pod}/{uid}",
            get(port_forward_uid).post(port_forward_uid),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::new(Logs { dir: logs_dir, cri }));
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "kubelet server");
        }
    });
    Ok((addr, task))
}

async fn streaming<const EXEC: bool>(
    State(logs): State<Arc<Logs>>,
    Path(target): Path<(String, String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let session = if EXEC {
        exec::Session::Exec
    } else {
        exec::Session::Attach
    };
    exec::stream(&logs.cri, session, target, query.as_deref().unwrap_or("")).await
}

async fn port_forward(
    State(logs): State<Arc<Logs>>,
    Path((ns, pod)): Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    portforward::stream(&logs.cri, &ns, &pod, None, query.as_deref().unwrap_or("")).await
}

async fn port_forward_uid(
    State(logs): State<Arc<Logs>>,
    Path((ns, pod, uid)): Path<(String, String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    portforward::stream(
        &logs.cri,
        &ns,
        &pod,
        Some(&uid),
        query.as_deref().unwrap_or(""),
    )
    .await
}

async fn container_logs(
    State(logs): State<Arc<Logs>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(opts): Query<LogOptions>,
) -> Response {
    let (file, text) = match read_log(&logs.dir, &ns, &pod, &container, &opts) {
        Ok(found) => found,
        Err(e) => return (e.status(), e.to_string()).into_response(),
    };
    if !opts.follow.unwrap_or(false) {
        return (StatusCode::OK, text).into_response();
    }
    // Follow: what is there now, then whatever the file gains, until the client goes away.
    let start = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let timestamps = opts.timestamps.unwrap_or(false);
    let stream = futures::stream::unfold(
        (Some(text), start, String::new()),
        move |(first, mut offset, mut partial)| {
            let file = file.clone();
            async move {
                if let Some(t) = first {
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(t)),
                        (None, offset, partial),
                    ));
                }
                loop {
                    tokio::time::sleep(FOLLOW_EVERY).await;
                    let Ok(bytes) = std::fs::read(&file) else {
                        return None;
                    };
                    if (bytes.len() as u64) > offset {
                        let new = String::from_utf8_lossy(&bytes[offset as usize..]).into_owned();
                        // Only whole lines: keep a trailing fragment for the next round.
                        let mut chunk = std::mem::take(&mut partial);
                        chunk.push_str(&new);
                        let cut = chunk.rfind('\n').map_or(0, |i| i + 1);
                        partial = chunk.split_off(cut);
                        offset = bytes.len() as u64;
                        if !chunk.is_empty() {
                            let out = render(&chunk, timestamps);
                            return Some((Ok(Bytes::from(out)), (None, offset, partial)));
                        }
                    }
                }
            }
        },
    );
    (StatusCode::OK, Body::from_stream(stream)).into_response()
}
