//! The HTTP(S) API server: routing, authentication and response encoding around
//! [`objects`], `watch`, discovery and OpenAPI.

mod admission;
mod aggregated_discovery;
pub mod aggregator;
pub mod attributes;
pub mod authn;
pub mod authz;
mod discovery;
pub mod escalation;
mod event_columns;
mod exec;
mod gc;
pub mod health;
pub mod impersonation;
pub mod inflight;
pub mod kubevirt_config;
mod logs;
pub mod objects;
mod openapi;
mod pod_columns;
mod portforward;
pub mod printers;
pub mod reviews;
pub mod route;
pub mod state;
mod table;
mod watch;
pub mod watch_buffer;

pub use self::state::State;

use crate::error::ApiError;
use crate::x509::PeerChain;
use authn::UserInfo;
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
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/portforward",
            axum::routing::any(pod_port_forward),
        )
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            aggregator::route,
        ))
        // Outermost: a request holds its slot while anything below reads its body.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            inflight::limit,
        ))
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

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An aggregated discovery document, with its Content-Type (and `Vary: Accept`: the same URL
/// answers the legacy form to other clients).
fn aggregated_response(body: &serde_json::Value) -> Response {
    let mut r = json_response(200, body, &[]);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(aggregated_discovery::CONTENT_TYPE),
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// `/apis` (`APIGroupList`): the registry's groups, the embedded subresource and upload APIs
/// when `up` serves them, the review groups and the aggregated groups.
fn api_groups(state: &State) -> serde_json::Value {
    let mut groups = discovery::groups(&state.registry());
    if let Some(list) = groups.get_mut("groups").and_then(|g| g.as_array_mut()) {
        if state.subresources.get().is_some() {
            list.push(kubevirt_controller::api::discovery::group());
        }
        if state.uploads.get().is_some() {
            list.push(kubevirt_controller::cdi::upload::api::group());
        }
        list.extend(reviews::groups());
        aggregator::merge_groups(list, aggregator::groups(state));
    }
    groups
}

/// The `APIResourceList` of `group`/`version` this server serves itself (not proxied).
fn local_resources(state: &State, group: &str, version: &str) -> Option<serde_json::Value> {
    let embedded = |api: &std::sync::OnceLock<axum::Router>, entry: serde_json::Value| {
        (api.get().is_some() && entry["name"] == group).then_some(())
    };
    discovery::resources(&state.registry(), group, version)
        .or_else(|| reviews::resources(group, version))
        .or_else(|| {
            embedded(
                &state.subresources,
                kubevirt_controller::api::discovery::group(),
            )
            .map(|()| kubevirt_controller::api::discovery::resources(version))
        })
        .or_else(|| {
            embedded(
                &state.uploads,
                kubevirt_controller::cdi::upload::api::group(),
            )
            .map(|()| kubevirt_controller::cdi::upload::api::resources())
        })
}

/// Authenticate and authorise a request: who it speaks for, or the 401 or 403 to answer.
/// Health probes are public (upstream binds them to every user, authenticated or not).
fn admit(
    state: &State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: Option<&PeerChain>,
    known: Option<&authn::Authenticated>,
) -> Result<UserInfo, ApiError> {
    let path = uri.path();
    if matches!(route::parse(path), Some(Route::Health { .. })) {
        return Ok(UserInfo::user("system:anonymous", &[]));
    }
    let real = match known {
        Some(authn::Authenticated(user)) => user.clone(),
        None => authn::authenticate(state, headers, peer)?,
    };
    let user = impersonation::apply(state, real, headers)?;
    let mut attrs = attributes::of_request(method.as_str(), path, &route::query(uri.query()));
    authz::authorize(state, &user, &mut attrs)?;
    Ok(user)
}

/// The subresource API, behind the server's own authentication (websocket upgrades included).
async fn subresources(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: axum::extract::Request,
) -> Response {
    if let Err(e) = admit(
        &state,
        req.method(),
        req.uri(),
        req.headers(),
        req.extensions().get(),
        req.extensions().get(),
    ) {
        return error_response(&e);
    }
    forward(state.subresources.get(), req).await
}

/// The upload API (token requests), behind the server's own authentication.
async fn uploads(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: axum::extract::Request,
) -> Response {
    if let Err(e) = admit(
        &state,
        req.method(),
        req.uri(),
        req.headers(),
        req.extensions().get(),
        req.extensions().get(),
    ) {
        return error_response(&e);
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
    match streamed_pod(&state, &req) {
        Ok(target) => exec::pod_stream(state, target, req).await,
        Err(e) => error_response(&e),
    }
}

/// `pods/{name}/portforward` (SPDY, or SPDY tunnelled in a websocket).
async fn pod_port_forward(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: axum::extract::Request,
) -> Response {
    match streamed_pod(&state, &req) {
        Ok(target) => portforward::pod_port_forward(state, target, req).await,
        Err(e) => error_response(&e),
    }
}

/// The pod a streaming request (exec, attach, port-forward) names, once the request is admitted
/// (authenticated and authorised); else why it is refused.
fn streamed_pod(state: &State, req: &axum::extract::Request) -> Result<route::Target, ApiError> {
    admit(
        state,
        req.method(),
        req.uri(),
        req.headers(),
        req.extensions().get(),
        req.extensions().get(),
    )?;
    match route::parse(req.uri().path()) {
        Some(Route::Object(target)) => Ok(target),
        _ => Err(ApiError::no_route()),
    }
}

async fn dispatch(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerChain>>,
    known: Option<axum::Extension<authn::Authenticated>>,
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
    let user = match admit(
        &state,
        &method,
        &uri,
        &headers,
        peer.as_ref().map(|p| &p.0),
        known.as_ref().map(|k| &k.0),
    ) {
        Ok(u) => u,
        Err(e) => return error_response(&e),
    };
    let Some(route) = route::parse(uri.path()) else {
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
        Route::CoreVersions if aggregated_discovery::wanted(accept(&headers)) => {
            aggregated_response(&aggregated_discovery::core(&state))
        }
        Route::CoreVersions => json_response(200, &discovery::core_versions(&state.address), &[]),
        Route::Groups if aggregated_discovery::wanted(accept(&headers)) => {
            aggregated_response(&aggregated_discovery::apis(&state).await)
        }
        Route::Groups => json_response(200, &api_groups(&state), &[]),
        Route::Group(g) => found(
            discovery::group(&reg(), &g)
                .or_else(|| reviews::group(&g))
                .or_else(|| aggregator::group(&state, &g)),
        ),
        Route::Resources { group, version } => found(
            discovery::resources(&reg(), &group, &version)
                .or_else(|| reviews::resources(&group, &version)),
        ),
        Route::OpenApiIndex => json_response(200, &openapi::index(&reg()), &[]),
        Route::OpenApi { group, version } => found(openapi::document(&reg(), &group, &version)),
        Route::Object(target) if reviews::is_review(&target) => {
            match reviews::answer(&state, &user, &target, method.as_str(), &body) {
                Ok(v) => json_response(201, &v, &[]),
                Err(e) => error_response(&e),
            }
        }
        Route::Object(target) => {
            let shape = Shape::from_accept(accept(&headers));
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
                // A client is its credential: its token, else its certificate's user.
                let client = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("user:{}", user.name));
                let Some(slot) = state.watches.acquire(&client) else {
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
                    user: &user,
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
            // The client certificate chain, verified per request by authentication.
            let chain = stream
                .get_ref()
                .1
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|c| PeerChain(Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())));
            let app = tower::ServiceExt::map_request(
                app,
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    if let Some(c) = &chain {
                        req.extensions_mut().insert(c.clone());
                    }
                    req
                },
            );
            let service = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        });
    }
}
