//! The HTTP(S) API server: routing, authentication and response encoding around
//! [`objects`], `watch`, discovery and OpenAPI.

mod admission;
mod discovery;
mod exec;
mod gc;
pub mod health;
mod logs;
pub mod objects;
mod openapi;
mod pod_columns;
pub mod printers;
pub mod route;
pub mod state;
mod table;
mod watch;
pub mod watch_buffer;

pub use self::state::State;

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use futures::StreamExt;
use objects::{Reply, Request, Shape};
use route::Route;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The largest request body, as kube-apiserver (3 MiB): larger ones get a 413 Status.
pub const MAX_REQUEST_BYTES: usize = 3 << 20;

/// The axum application.
pub fn router(state: Arc<State>) -> axum::Router {
    const SUBRESOURCES: &str = "/apis/subresources.kubevirt.io";
    const UPLOADS: &str = "/apis/upload.cdi.kubevirt.io";
    let proxy = kubevirt_controller::cdi::upload::api::PROXY_PREFIX;
    axum::Router::new()
        .route(SUBRESOURCES, axum::routing::any(subresources))
        .route(
            &format!("{SUBRESOURCES}/{{*rest}}"),
            axum::routing::any(subresources),
        )
        .route(UPLOADS, axum::routing::any(uploads))
        .route(&format!("{UPLOADS}/{{*rest}}"), axum::routing::any(uploads))
        .route(
            &format!("{proxy}/{{*rest}}"),
            axum::routing::any(upload_proxy),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            axum::routing::any(pod_stream),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/attach",
            axum::routing::any(pod_stream),
        )
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

fn json_response(code: u16, body: &serde_json::Value, warnings: &[String]) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status(), &[])
}

fn authorized(state: &State, headers: &HeaderMap, route: Option<&Route>) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    if matches!(route, Some(Route::Health { .. })) {
        return true;
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            constant_time_eq(t.trim().as_bytes(), token.as_bytes())
                || objects::service_account_of(state, t.trim()).is_some()
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The subresource API, behind the server's own authentication (websocket upgrades included).
async fn subresources(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: axum::extract::Request,
) -> Response {
    if !authorized(&state, req.headers(), None) {
        return error_response(&ApiError::unauthorized());
    }
    forward(state.subresources.get(), req).await
}

/// The upload API (token requests), behind the server's own authentication.
async fn uploads(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: axum::extract::Request,
) -> Response {
    if !authorized(&state, req.headers(), None) {
        return error_response(&ApiError::unauthorized());
    }
    forward(state.uploads.get(), req).await
}

/// The upload proxy: its upload token is its authentication (upstream's cdi-uploadproxy).
async fn upload_proxy(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: axum::extract::Request,
) -> Response {
    forward(state.uploads.get(), req).await
}

/// `req` to `api`, if the API is there.
async fn forward(api: Option<&axum::Router>, req: axum::extract::Request) -> Response {
    // A fresh request: the path parameters this router matched must not reach the API's own
    // routes; the pending upgrade (a console's websocket) goes along.
    let (mut parts, body) = req.into_parts();
    let mut inner = axum::extract::Request::new(body);
    *inner.method_mut() = parts.method;
    *inner.uri_mut() = parts.uri;
    *inner.version_mut() = parts.version;
    *inner.headers_mut() = parts.headers;
    if let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
        inner.extensions_mut().insert(upgrade);
    }
    match api {
        Some(api) => match tower::ServiceExt::oneshot(api.clone(), inner).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
        None => error_response(&ApiError::no_route()),
    }
}

/// `pods/{name}/exec` and `pods/{name}/attach` (websocket upgrades).
async fn pod_stream(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: axum::extract::Request,
) -> Response {
    let route = route::parse(req.uri().path());
    if !authorized(&state, req.headers(), route.as_ref()) {
        return error_response(&ApiError::unauthorized());
    }
    let Some(Route::Object(target)) = route else {
        return error_response(&ApiError::no_route());
    };
    exec::pod_stream(state, target, req).await
}

async fn dispatch(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(&ApiError::too_large(format!(
                "Request entity too large: limit is {MAX_REQUEST_BYTES}"
            )));
        }
        Err(e) => return error_response(&ApiError::bad_request(e.body_text())),
    };
    let route = route::parse(uri.path());
    if !authorized(&state, &headers, route.as_ref()) {
        return error_response(&ApiError::unauthorized());
    }
    let Some(route) = route else {
        return error_response(&ApiError::no_route());
    };
    let query = route::query(uri.query());
    let reg = || state.registry();
    let found = |v: Option<serde_json::Value>| match v {
        Some(v) => json_response(200, &v, &[]),
        None => error_response(&ApiError::no_route()),
    };
    match route {
        Route::Version => json_response(200, &discovery::version(), &[]),
        Route::Health { probe, check } => {
            let (code, text) = health::probe(&state, probe, check.as_deref(), &query);
            let mut r = Response::new(Body::from(text));
            *r.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        Route::CoreVersions => json_response(200, &discovery::core_versions(&state.address), &[]),
        Route::Groups => {
            let mut groups = discovery::groups(&reg());
            if state.subresources.get().is_some()
                && let Some(list) = groups.get_mut("groups").and_then(|g| g.as_array_mut())
            {
                list.push(kubevirt_controller::api::discovery::group());
            }
            if state.uploads.get().is_some()
                && let Some(list) = groups.get_mut("groups").and_then(|g| g.as_array_mut())
            {
                list.push(kubevirt_controller::cdi::upload::api::group());
            }
            json_response(200, &groups, &[])
        }
        Route::Group(g) => found(discovery::group(&reg(), &g)),
        Route::Resources { group, version } => {
            found(discovery::resources(&reg(), &group, &version))
        }
        Route::OpenApiIndex => json_response(200, &openapi::index(&reg()), &[]),
        Route::OpenApi { group, version } => found(openapi::document(&reg(), &group, &version)),
        Route::Object(target) => {
            let accept = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let shape = Shape::from_accept(accept);
            let is_watch = method == Method::GET
                && target.name.is_none()
                && query.get("watch").is_some_and(|w| w == "true" || w == "1");
            if method == Method::GET
                && target.sub.as_deref() == Some("log")
                && target.group.is_empty()
                && target.plural == "pods"
                && target.name.is_some()
            {
                return logs::pod_log(state.clone(), target, query)
                    .await
                    .unwrap_or_else(|e| error_response(&e));
            }
            if is_watch {
                let client = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("anonymous");
                let Some(slot) = state.watches.acquire(client) else {
                    return error_response(&ApiError::too_many_requests(format!(
                        "too many open watches: a client may hold {} at once",
                        watch_buffer::MAX_WATCHES_PER_CLIENT
                    )));
                };
                return match watch::start(state.clone(), &target, &query, shape) {
                    Ok(rx) => {
                        // The slot is held for as long as the response streams.
                        let stream = rx.map(move |line| {
                            let _held = &slot;
                            Ok::<_, std::convert::Infallible>(Bytes::from(line))
                        });
                        let mut r = Response::new(Body::from_stream(stream));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        r
                    }
                    Err(e) => error_response(&e),
                };
            }
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let method = method.as_str().to_string();
            let state2 = state.clone();
            let result = tokio::task::spawn_blocking(move || {
                let req = Request {
                    method: &method,
                    target: &target,
                    query: &query,
                    shape,
                    content_type: &content_type,
                    body: &body,
                };
                objects::handle(&state2, &req)
            })
            .await;
            match result {
                Ok(Ok(Reply {
                    code,
                    body: objects::Body::Json(v),
                    warnings,
                })) => json_response(code, &v, &warnings),
                Ok(Ok(Reply {
                    body: objects::Body::Text(t),
                    ..
                })) => {
                    let mut r = Response::new(Body::from(t));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    r
                }
                Ok(Err(e)) => error_response(&e),
                Err(e) => {
                    error_response(&ApiError::internal(format!("request handler failed: {e}")))
                }
            }
        }
    }
}

/// Serve `state` on `listener`, over TLS when `tls` is given, until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    let Some(tls) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut shutdown => return Ok(()),
        };
        // Interactive streams (a console's keystrokes) must not wait on Nagle.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        });
    }
}
