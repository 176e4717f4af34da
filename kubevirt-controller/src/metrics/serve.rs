//! The `/metrics` endpoint on `--metrics-listen ADDR`, plain HTTP or HTTPS (the subresource
//! API's TLS serving, `crate::api::serve`), each scrape rendered from what its [`Collect`]
//! gathers at that moment.

use super::exposition::{CONTENT_TYPE, Family, render};
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What one scrape gathers.
pub type Collect = Arc<dyn Fn() -> BoxFuture<'static, Vec<Family>> + Send + Sync>;

/// The router: `GET /metrics`.
pub fn router(collect: Collect) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let collect = collect.clone();
            async move {
                let text = render(&collect().await);
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
            }
        }),
    )
}

/// Serves `/metrics` on `listener` until the task is dropped; a failed accept loop is logged.
pub async fn serve(listener: TcpListener, collect: Collect) {
    if let Err(error) = axum::serve(listener, router(collect)).await {
        tracing::warn!(error = %error, "the metrics endpoint stopped");
    }
}

/// Binds `addr` and serves `/metrics` there in a task, over TLS with `tls`; returns the
/// bound address.
///
/// # Errors
/// The address cannot be bound.
pub async fn spawn(
    addr: std::net::SocketAddr,
    collect: Collect,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    match tls {
        None => {
            tokio::spawn(serve(listener, collect));
        }
        Some(tls) => {
            tokio::spawn(async move {
                let app = router(collect);
                let served =
                    crate::api::serve::serve_tls(listener, app, tls, std::future::pending()).await;
                if let Err(error) = served {
                    tracing::warn!(error = %error, "the metrics endpoint stopped");
                }
            });
        }
    }
    tracing::info!(address = %bound, "serving /metrics");
    Ok(bound)
}
