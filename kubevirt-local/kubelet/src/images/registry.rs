//! The node's embedded, read-only registry: the pull side of the OCI distribution API over plain
//! HTTP, serving a [`Catalog`]. `GET`/`HEAD` of `/v2/`, `/v2/<name>/manifests/<tag|digest>`
//! (with the manifest's `Content-Type` and `Docker-Content-Digest`) and
//! `/v2/<name>/blobs/<digest>`; anything else is the registry's JSON error body
//! (`NAME_UNKNOWN`, `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `NOT_FOUND`, `UNSUPPORTED` for pushes).
//! It listens on loopback: containerd pulls from it through a `hosts.toml` that says plain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::served::{Catalog, valid_digest, valid_name, valid_tag};

/// The header every answer carries (clients check it on `/v2/`).
pub const API_VERSION: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// Manifests are small; a blob larger than this is no manifest (and is not read as one).
const MAX_MANIFEST: u64 = 4 << 20;

fn error(status: StatusCode, code: &str, message: &str, detail: serde_json::Value) -> Response {
    let body = json!({"errors": [{"code": code, "message": message, "detail": detail}]});
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static("docker-distribution-api-version"),
                API_VERSION.1,
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

fn not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "not found",
        json!({"path": path}),
    )
}

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/`.
    Base,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(&'a str, &'a str),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(&'a str, &'a str),
    /// Anything else.
    Other,
}

/// Splits a request path into a [`Route`].
pub fn route(path: &str) -> Route<'_> {
    if path == "/v2/" || path == "/v2" {
        return Route::Base;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::Other;
    };
    if let Some((name, reference)) = rest.rsplit_once("/manifests/")
        && !reference.contains('/')
    {
        return Route::Manifest(name, reference);
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/")
        && !digest.contains('/')
    {
        return Route::Blob(name, digest);
    }
    Route::Other
}

/// Answers a file with `headers`; for `HEAD` only the headers (with the file's length).
async fn file_response(
    method: &Method,
    path: &std::path::Path,
    content_type: String,
    digest: &str,
) -> Response {
    let Ok(file) = tokio::fs::File::open(path).await else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
            json!({"digest": digest}),
        );
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::new(file))
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(digest) {
        h.insert("docker-content-digest", v.clone());
        h.insert(header::ETAG, v);
    }
    h.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static(API_VERSION.1),
    );
    response
}

async fn handle(State(catalog): State<Arc<Catalog>>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if method != Method::GET && method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this registry is read-only: it serves the node's images, it takes no pushes",
            json!({"method": method.as_str(), "path": path}),
        );
    }
    match route(path) {
        Route::Base => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::HeaderName::from_static("docker-distribution-api-version"),
                    API_VERSION.1,
                ),
            ],
            "{}",
        )
            .into_response(),
        Route::Manifest(name, _) | Route::Blob(name, _)
            if !valid_name(name) || !catalog.has(name) =>
        {
            error(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                "repository name not known to registry",
                json!({"name": name}),
            )
        }
        Route::Manifest(name, reference) => {
            let digest = if valid_digest(reference) {
                reference.to_string()
            } else if let Some(d) = valid_tag(reference)
                .then(|| catalog.tag(name, reference))
                .flatten()
            {
                d.digest.clone()
            } else {
                return error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    "manifest unknown",
                    json!({"name": name, "reference": reference}),
                );
            };
            let file = catalog
                .blob(name, &digest)
                .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() <= MAX_MANIFEST));
            let Some(file) = file else {
                return error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    "manifest unknown",
                    json!({"name": name, "reference": reference}),
                );
            };
            let head = tokio::fs::read(&file).await.unwrap_or_default();
            let media_type = catalog.manifest_media_type(name, &digest, &head);
            file_response(&method, &file, media_type, &digest).await
        }
        Route::Blob(name, digest) => match catalog.blob(name, digest) {
            Some(file) => {
                file_response(&method, &file, "application/octet-stream".into(), digest).await
            }
            None => error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
                json!({"name": name, "digest": digest}),
            ),
        },
        Route::Other => not_found(path),
    }
}

/// The registry's router over `catalog`.
pub fn router(catalog: Arc<Catalog>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(catalog)
}

/// A running registry.
#[derive(Debug)]
pub struct RegistryServer {
    /// Where it listens (`127.0.0.1:PORT`).
    pub address: SocketAddr,
    /// The serving task; it ends when the stop signal turns true.
    pub task: JoinHandle<()>,
}

/// Serves `catalog` on `listener` until `stop` turns true.
pub fn serve(
    listener: tokio::net::TcpListener,
    catalog: Arc<Catalog>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<RegistryServer> {
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router(catalog)).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "the node's registry stopped");
        }
    });
    Ok(RegistryServer { address, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_routed() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(
            route("/v2/kubevirt-rs/pause/manifests/1"),
            Route::Manifest("kubevirt-rs/pause", "1")
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Route::Blob("a", "sha256:00")
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), Route::Other);
        assert_eq!(route("/v2/_catalog"), Route::Other);
        assert_eq!(route("/v1/x"), Route::Other);
    }
}
