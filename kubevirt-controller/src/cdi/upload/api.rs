//! The upload API (`upload.cdi.kubevirt.io/v1beta1`, `uploadtokenrequests`: create only) and
//! the upload proxy (`<proxy>/v1beta1/upload`, `/v1beta1/upload-async`).
//!
//! A token request names a claim that is an upload target (a DataVolume's with an `upload`
//! source); the answer's `status.token` lets its bearer upload into that claim for five
//! minutes. The proxy checks the token (`Authorization: Bearer`, 401 otherwise) and streams
//! the body to the claim's `cdi-upload-<claim>` pod; 503 while that pod is not running yet.
//!
//! The token API sits behind the API server's authentication (`kubevirt-local up` routes
//! `/apis/upload.cdi.kubevirt.io` here behind its bearer token); the proxy is reached without
//! cluster credentials, as upstream's `cdi-uploadproxy`: the token is its only key.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, Client};
use kubevirt_api::cdi::v1beta1::DataVolume;
use serde_json::{Value, json};

use super::token::{LIFETIME_SECS, TokenKey, UploadClaims};
use super::{PORT, UPLOAD_PATHS};
use crate::cdi::datavolume::importer::{running_ip, socket_address, upload_pod_name};

/// The API group.
pub const GROUP: &str = "upload.cdi.kubevirt.io";
/// Its version.
pub const VERSION: &str = "v1beta1";
/// Where `kubevirt-local up` serves the upload proxy (its upload proxy URL is the API server's
/// URL with this path).
pub const PROXY_PREFIX: &str = "/cdi-upload-proxy";

/// What the upload API and proxy need.
#[derive(Clone)]
pub struct Uploads {
    /// The API server client it reads claims and pods with.
    pub client: Client,
    /// The token key (shared by the token API and the proxy).
    pub key: TokenKey,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads").finish_non_exhaustive()
    }
}

type Shared = State<Arc<Uploads>>;

impl Uploads {
    /// The router over `/apis/upload.cdi.kubevirt.io/...` and [`PROXY_PREFIX`]`/v1beta1/...`.
    pub fn router(self) -> Router {
        let base = format!("/apis/{GROUP}");
        let mut app = Router::new()
            .route(&base, get(|| async { axum::Json(group()) }))
            .route(&format!("{base}/"), get(|| async { axum::Json(group()) }))
            .route(
                &format!("{base}/{VERSION}"),
                get(|| async { axum::Json(resources()) }),
            )
            .route(
                &format!("{base}/{VERSION}/namespaces/{{namespace}}/uploadtokenrequests"),
                post(token_request),
            );
        for path in UPLOAD_PATHS {
            app = app.route(&format!("{PROXY_PREFIX}{path}"), any(proxy));
        }
        app.with_state(Arc::new(self))
    }
}

/// The `APIGroup` entry.
pub fn group() -> Value {
    let v = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP,
        "versions": [v.clone()], "preferredVersion": v})
}

/// The `APIResourceList`.
pub fn resources() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [{"name": "uploadtokenrequests", "singularName": "uploadtokenrequest",
            "namespaced": true, "kind": "UploadTokenRequest", "verbs": ["create"]}]})
}

/// A Kubernetes `Status` failure.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

fn text(code: StatusCode, message: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{message}\n"),
    )
        .into_response()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

async fn token_request(State(s): Shared, Path(namespace): Path<String>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the UploadTokenRequest is not JSON: {e}"),
            );
        }
    };
    let Some(pvc) = request["spec"]["pvcName"]
        .as_str()
        .filter(|p| !p.is_empty())
    else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "UploadTokenRequest.upload.cdi.kubevirt.io is invalid: spec.pvcName: Required value",
        );
    };
    match upload_target(&s.client, &namespace, pvc).await {
        Ok(true) => {}
        Ok(false) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "persistentvolumeclaim {namespace}/{pvc} is not an upload target (a DataVolume with an upload source, or a claim annotated cdi.kubevirt.io/storage.upload.target)"
                ),
            );
        }
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e),
    }
    let token = s.key.issue(&UploadClaims {
        namespace: namespace.clone(),
        pvc: pvc.to_string(),
        exp: now() + LIFETIME_SECS,
    });
    let mut answer = request.clone();
    answer["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    answer["kind"] = json!("UploadTokenRequest");
    answer["metadata"]["namespace"] = json!(namespace);
    answer["metadata"]["creationTimestamp"] = json!(jiff::Timestamp::now().to_string());
    answer["status"] = json!({"token": token});
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// Whether claim `pvc` is an upload target: a DataVolume of its name uploads, or the claim is
/// annotated as one (`virtctl image-upload pvc`).
async fn upload_target(client: &Client, namespace: &str, pvc: &str) -> Result<bool, String> {
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), namespace);
    let dv = dvs
        .get_opt(pvc)
        .await
        .map_err(|e| format!("reading DataVolume {namespace}/{pvc}: {e}"))?;
    if dv
        .and_then(|d| d.spec.source)
        .is_some_and(|s| s.upload.is_some())
    {
        return Ok(true);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(pvc)
        .await
        .map_err(|e| format!("reading PersistentVolumeClaim {namespace}/{pvc}: {e}"))?;
    Ok(claim.as_ref().is_some_and(super::pvc::is_upload_target))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn proxy(State(s): Shared, req: Request) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return text(
            StatusCode::UNAUTHORIZED,
            "an upload needs its token in the Authorization header (Bearer)",
        );
    };
    let claims = match s.key.verify(token, now()) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &claims.namespace);
    let name = upload_pod_name(&claims.pvc);
    let ip = match pods.get_opt(&name).await {
        Ok(Some(pod)) => running_ip(&pod).map(str::to_string),
        Ok(None) => None,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("reading pod {}/{name}: {e}", claims.namespace),
            );
        }
    };
    let Some(ip) = ip else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the upload server of {}/{} is not ready yet; try again",
                claims.namespace, claims.pvc
            ),
        );
    };
    match forward(&ip, req).await {
        Ok(r) => r,
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            &format!("reaching the upload server at {ip}: {e}"),
        ),
    }
}

/// Streams `req` (its path without the proxy prefix, its body, its length) to the upload
/// server at `ip`, and its answer back.
async fn forward(ip: &str, req: Request) -> Result<Response, String> {
    let address = socket_address(ip, PORT);
    let stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path()
        .strip_prefix(PROXY_PREFIX)
        .unwrap_or(parts.uri.path())
        .to_string();
    let mut upstream = axum::http::Request::builder()
        .method(parts.method)
        .uri(path)
        .header(header::HOST, address.as_str());
    for name in [header::CONTENT_LENGTH, header::CONTENT_TYPE] {
        if let Some(v) = parts.headers.get(&name) {
            upstream = upstream.header(name, v);
        }
    }
    let upstream = upstream.body(body).map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = answer.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_names_the_token_requests() {
        assert_eq!(
            group()["preferredVersion"]["groupVersion"],
            "upload.cdi.kubevirt.io/v1beta1"
        );
        let r = resources();
        assert_eq!(r["resources"][0]["kind"], "UploadTokenRequest");
        assert_eq!(r["resources"][0]["verbs"], json!(["create"]));
    }
}
