//! The subresource API, `subresources.kubevirt.io` (upstream's virt-api): discovery, `version`,
//! `healthz`, the VM lifecycle (`start`, `stop`, `restart`), the VMI actions (`pause`,
//! `unpause`, `softreboot`, `freeze`, `unfreeze`), the guest agent's `guestosinfo`, `userlist`
//! and `filesystemlist` (no guest runs an agent: upstream's 409) and the `console` stream.
//!
//! [`Subresources::router`] is a plain axum router over the full paths
//! (`/apis/subresources.kubevirt.io/...`): `kubevirt-local up` routes that prefix to it behind
//! its own authentication, and `kubevirt-controller api` serves it over TLS for a cluster's
//! `APIService`, asking the cluster who the caller is and what it may do ([`auth`]).
//!
//! Lifecycle requests change the VM (its run strategy or its status' state-change requests) and
//! the VM controller carries them out; VMI actions and the console go to the node agent of the
//! VMI's node over its endpoint ([`crate::node::endpoint`]), never to a path on this host.

pub mod agents;
pub mod auth;
pub mod console;
pub mod decide;
pub mod discovery;
pub mod instance;
pub mod lifecycle;
pub mod migrate;
pub mod options;
pub mod portforward;
pub mod serve;
pub mod status;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use kube::Client;

use self::agents::NodeAgents;
use self::auth::{Access, Caller};
use self::discovery::{GROUP, VERSIONS};
use self::instance::VmiAction;
use self::status::ApiError;

/// How callers are authenticated.
#[derive(Clone, Debug)]
pub enum Authentication {
    /// In front of this router already (the embedded plane's bearer token).
    Done,
    /// By the cluster: a verified front proxy's `X-Remote-User` headers (see [`serve`]) or a
    /// bearer token through TokenReview, then a SubjectAccessReview per request.
    Cluster,
}

/// The request extension a server puts on requests that came with a verified front-proxy
/// (aggregation) client certificate: their `X-Remote-*` headers may be trusted.
#[derive(Clone, Copy, Debug)]
pub struct FrontProxyVerified;

/// What the API needs.
#[derive(Clone)]
pub struct Subresources {
    /// The API server client it acts with.
    pub client: Client,
    /// How it reaches node agents.
    pub agents: NodeAgents,
    /// How it knows its callers.
    pub authentication: Authentication,
}

impl std::fmt::Debug for Subresources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subresources")
            .field("agents", &self.agents)
            .field("authentication", &self.authentication)
            .finish_non_exhaustive()
    }
}

type Shared = State<Arc<Subresources>>;

impl Subresources {
    /// The router over `/apis/subresources.kubevirt.io/...`.
    pub fn router(self) -> Router {
        let base = format!("/apis/{GROUP}");
        let vm = format!(
            "{base}/{{version}}/namespaces/{{namespace}}/virtualmachines/{{name}}/{{action}}"
        );
        let vmi = format!(
            "{base}/{{version}}/namespaces/{{namespace}}/virtualmachineinstances/{{name}}/{{action}}"
        );
        Router::new()
            .route(&base, get(|| async { axum::Json(discovery::group()) }))
            .route(
                &format!("{base}/"),
                get(|| async { axum::Json(discovery::group()) }),
            )
            .route(&format!("{base}/{{version}}"), get(resources))
            .route(&format!("{base}/{{version}}/"), get(resources))
            .route(&format!("{base}/{{version}}/version"), get(version))
            .route(&format!("{base}/{{version}}/healthz"), get(healthz))
            .route(&vm, put(vm_action))
            .route(&vmi, put(vmi_action).get(vmi_stream))
            .route(&format!("{vm}/{{port}}"), get(port_forward))
            .route(&format!("{vm}/{{port}}/{{protocol}}"), get(port_forward))
            .route(&format!("{vmi}/{{port}}"), get(port_forward))
            .route(&format!("{vmi}/{{port}}/{{protocol}}"), get(port_forward))
            .fallback(|| async { ApiError::no_route() })
            .with_state(Arc::new(self))
    }

    /// The caller of a request, authorised for `access` (or nobody to check, embedded).
    async fn check(&self, parts: &Parts, access: Access<'_>) -> Result<(), ApiError> {
        let Authentication::Cluster = self.authentication else {
            return Ok(());
        };
        let caller = if parts.extensions.get::<FrontProxyVerified>().is_some()
            && let Some(user) = header(&parts.headers, "x-remote-user")
        {
            Caller {
                user: user.to_string(),
                groups: parts
                    .headers
                    .get_all("x-remote-group")
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect(),
                uid: None,
            }
        } else {
            let token = auth::bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
            auth::review_token(&self.client, token).await?
        };
        auth::authorize(&self.client, &caller, &access).await
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn known_version(version: &str) -> Result<(), ApiError> {
    if VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(ApiError::no_route())
    }
}

async fn resources(Path(version): Path<String>) -> Response {
    match known_version(&version) {
        Ok(()) => axum::Json(discovery::resources(&version)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn version(Path(v): Path<String>) -> Response {
    match known_version(&v) {
        Ok(()) => axum::Json(discovery::version()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// The path of an object's subresource.
#[derive(serde::Deserialize)]
struct Target {
    version: String,
    namespace: String,
    name: String,
    action: String,
}

async fn vm_action(
    State(api): Shared,
    Path(t): Path<Target>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    known_version(&t.version)?;
    if !discovery::VM_UPDATES.contains(&t.action.as_str()) {
        return Err(ApiError::no_route());
    }
    api.check(&parts, access("update", "virtualmachines", &t))
        .await?;
    let (c, ns, name) = (&api.client, t.namespace.as_str(), t.name.as_str());
    match t.action.as_str() {
        "start" => lifecycle::start(c, ns, name, options::decode(&body)?).await?,
        "stop" => lifecycle::stop(c, ns, name, options::decode(&body)?).await?,
        "migrate" => {
            migrate::migrate(c, ns, name, options::decode(&body)?).await?;
        }
        _ => lifecycle::restart(c, ns, name, options::decode(&body)?).await?,
    }
    Ok(axum::http::StatusCode::ACCEPTED.into_response())
}

fn access<'a>(verb: &'a str, resource: &'a str, t: &'a Target) -> Access<'a> {
    Access {
        verb,
        resource,
        subresource: &t.action,
        namespace: &t.namespace,
        name: &t.name,
    }
}

async fn vmi_action(
    State(api): Shared,
    Path(t): Path<Target>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    known_version(&t.version)?;
    if t.action == instance::MEMORY_SNAPSHOT {
        api.check(&parts, access("update", "virtualmachineinstances", &t))
            .await?;
        let req = instance::decode_memory_snapshot(&body)?;
        instance::memory_snapshot(&api.client, &api.agents, &t.namespace, &t.name, req).await?;
        return Ok(axum::http::StatusCode::OK.into_response());
    }
    let action = VmiAction::parse(&t.action).ok_or_else(ApiError::no_route)?;
    api.check(&parts, access("update", "virtualmachineinstances", &t))
        .await?;
    let opts = options::decode(&body)?;
    instance::act(
        &api.client,
        &api.agents,
        &t.namespace,
        &t.name,
        action,
        opts,
    )
    .await?;
    Ok(axum::http::StatusCode::OK.into_response())
}

async fn vmi_stream(
    State(api): Shared,
    Path(t): Path<Target>,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    known_version(&t.version)?;
    if !discovery::VMI_GETS.contains(&t.action.as_str()) {
        return Err(ApiError::no_route());
    }
    api.check(&parts, access("get", "virtualmachineinstances", &t))
        .await?;
    match t.action.as_str() {
        "vnc" => return console::vnc(&api.client, &t.namespace, &t.name).await,
        "console" => {}
        _ => return instance::guest_info(&api.client, &t.namespace, &t.name).await,
    }
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .ok();
    console::console(&api.client, &api.agents, &t.namespace, &t.name, upgrade).await
}

/// The path of a port-forward: `{vm|vmi}/{name}/portforward/{port}[/{protocol}]`.
#[derive(serde::Deserialize)]
struct ForwardTarget {
    version: String,
    namespace: String,
    name: String,
    action: String,
    port: String,
    protocol: Option<String>,
}

async fn port_forward(
    State(api): Shared,
    Path(t): Path<ForwardTarget>,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    known_version(&t.version)?;
    if t.action != "portforward" {
        return Err(ApiError::no_route());
    }
    let resource = if parts.uri.path().contains("/virtualmachines/") {
        "virtualmachines"
    } else {
        "virtualmachineinstances"
    };
    let target = Target {
        version: t.version.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        action: t.action.clone(),
    };
    api.check(&parts, access("get", resource, &target)).await?;
    let port = portforward::parse_port(&t.port, t.protocol.as_deref())?;
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .ok();
    portforward::forward(
        &api.client,
        &api.agents,
        &t.namespace,
        &t.name,
        port,
        upgrade,
    )
    .await
}
