//! API aggregation (`apiregistration.k8s.io/v1`), as kube-aggregator does it in front of
//! kube-apiserver: APIService objects are stored and served like any built-in kind; every
//! request under `/apis/<group>/<version>` of an APIService that names a Service is
//! authenticated and authorised here, then proxied to a ready endpoint of that Service
//! ([`resolve`]) over HTTPS with this server's front-proxy client certificate and the caller
//! in `X-Remote-*` headers ([`headers`], [`proxy`]); upgrades (websocket, SPDY) are spliced.
//! `/apis` and `/apis/<group>` list the aggregated groups; `/apis/<group>/<version>` is the
//! aggregated server's own discovery, proxied. [`availability`] keeps each APIService's
//! `Available` condition.
//!
//! A group/version this server also serves itself (the embedded `subresources.kubevirt.io` of
//! plain `up`): a `Local` APIService (no `spec.service`) leaves it to the local handler; one
//! with a Service takes the group/version over, as on a cluster.

pub mod availability;
pub mod frontproxy;
pub mod headers;
pub mod proxy;
pub mod resolve;

use self::frontproxy::FrontProxy;
use self::resolve::ServiceRef;
use super::State;
use crate::error::ApiError;
use crate::storage::ObjectKey;
use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// The storage name of APIServices.
pub const APISERVICES: &str = "apiregistration.k8s.io/apiservices";

/// The aggregator's identity towards aggregated servers.
#[derive(Debug)]
pub struct Aggregator {
    /// The front proxy's CA and client certificate.
    pub front: FrontProxy,
}

/// Why aggregation could not be turned on.
#[derive(Debug, thiserror::Error)]
pub enum EnableError {
    /// The front-proxy CA or client certificate could not be made or read.
    #[error("the front proxy's certificates: {0}")]
    Certificates(#[from] crate::setup::SetupError),
    /// The `extension-apiserver-authentication` ConfigMap could not be written.
    #[error("publishing kube-system/extension-apiserver-authentication: {0}")]
    Publish(#[from] ApiError),
}

/// Turn aggregation on for `state`: the front-proxy identity from `dir` (made on first use),
/// and the `extension-apiserver-authentication` ConfigMap published (`client_ca`: the CA this
/// server's clients' certificates chain to, if any).
pub fn enable(
    state: &State,
    dir: &std::path::Path,
    client_ca: Option<&str>,
) -> Result<(), EnableError> {
    let front = FrontProxy::load_or_create(dir)?;
    frontproxy::publish(state, frontproxy::configmap_data(&front.ca_pem, client_ca))?;
    let _ = state.aggregator.set(Aggregator { front });
    Ok(())
}

/// The stored APIService `name`, unless it is being deleted.
fn apiservice(state: &State, name: &str) -> Option<Value> {
    state
        .store
        .get(&ObjectKey::new(APISERVICES, "", name))
        .ok()
        .flatten()
        .filter(|a| a["metadata"].get("deletionTimestamp").is_none())
}

/// Every stored APIService.
pub fn apiservices(state: &State) -> Vec<Value> {
    state
        .store
        .list(APISERVICES, None)
        .map(|(items, _)| items)
        .unwrap_or_default()
}

/// The APIService of `group`/`version` with a Service behind it, if any.
pub fn backed(state: &State, group: &str, version: &str) -> Option<(Value, ServiceRef)> {
    let a = apiservice(state, &headers::apiservice_name(group, version))?;
    let svc = resolve::service_ref(&a)?;
    Some((a, svc))
}

/// Where `svc` is served now, or why nowhere.
pub fn locate(state: &State, svc: &ServiceRef) -> Result<SocketAddr, resolve::Unavailable> {
    let get = |resource: &str| {
        state
            .store
            .get(&ObjectKey::new(resource, &svc.namespace, &svc.name))
            .ok()
            .flatten()
    };
    let service = get("/services");
    let endpoints = get("/endpoints");
    let pods = if endpoints.is_none() && service.is_some() {
        state
            .store
            .list("/pods", Some(&svc.namespace))
            .map(|(p, _)| p)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    resolve::endpoint(svc, service.as_ref(), endpoints.as_ref(), &pods)
}

/// The client TLS configuration for `apiservice`.
pub fn tls_for(
    aggregator: &Aggregator,
    apiservice: &Value,
    svc: &ServiceRef,
) -> Result<Arc<rustls::ClientConfig>, proxy::ProxyError> {
    let bundle = apiservice["spec"]["caBundle"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let insecure = apiservice["spec"]["insecureSkipTLSVerify"] == true;
    proxy::client_config(&aggregator.front, &bundle, insecure, &svc.server_name())
}

/// The middleware in front of every route: requests of an aggregated group/version are
/// admitted and proxied, the rest go on to this server's own handlers.
pub async fn route(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let found = headers::group_version(req.uri().path()).and_then(|(g, v)| backed(&state, g, v));
    match found {
        Some((apiservice, svc)) => forward(&state, &apiservice, &svc, req)
            .await
            .unwrap_or_else(|e| super::error_response(&e)),
        None => next.run(req).await,
    }
}

/// Admit `req`, then send it to the Service behind `apiservice`.
async fn forward(
    state: &State,
    apiservice: &Value,
    svc: &ServiceRef,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let user = super::admit(
        state,
        req.method(),
        req.uri(),
        req.headers(),
        req.extensions().get(),
        req.extensions().get(),
    )?;
    let aggregator = state
        .aggregator
        .get()
        .ok_or_else(|| ApiError::service_unavailable("API aggregation is not enabled"))?;
    let unavailable = |why: String| {
        ApiError::service_unavailable(format!(
            "the server is currently unable to handle the request ({} is unavailable: {why})",
            apiservice["metadata"]["name"].as_str().unwrap_or_default()
        ))
    };
    let at = locate(state, svc).map_err(|u| unavailable(u.message))?;
    let tls = tls_for(aggregator, apiservice, svc).map_err(|e| unavailable(e.to_string()))?;
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = path
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{path:?} is not a valid request path")))?;
    let extra: Vec<(String, Vec<String>)> = user
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    *out.headers_mut() = headers::forwarded(&parts.headers, &user, &extra, &svc.server_name());
    proxy::send(at, tls, &svc.server_name(), out, upgrade)
        .await
        .map_err(|e| unavailable(e.to_string()))
}

/// The aggregated server's `APIResourceList` of `group`/`version` (its discovery document, asked
/// as the availability check asks it), for aggregated discovery; why not, if it cannot be had.
pub async fn resource_list(state: &State, group: &str, version: &str) -> Result<Value, String> {
    let (apiservice, svc) =
        backed(state, group, version).ok_or_else(|| "no APIService with a Service".to_string())?;
    let aggregator = state
        .aggregator
        .get()
        .ok_or_else(|| "API aggregation is not enabled".to_string())?;
    let at = locate(state, &svc).map_err(|u| u.message)?;
    let (code, body) =
        availability::discover(aggregator, &apiservice, &svc, at, group, version).await?;
    if !(200..300).contains(&code) {
        return Err(format!("bad status {code}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not an APIResourceList: {e}"))
}

/// A group entry of `/apis` per aggregated group: its versions by `versionPriority`, highest
/// first (the preferred one).
pub fn groups(state: &State) -> Vec<Value> {
    let mut by_group: std::collections::BTreeMap<String, Vec<(i64, String)>> = Default::default();
    for a in apiservices(state) {
        if resolve::service_ref(&a).is_none() || a["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let (Some(g), Some(v)) = (a["spec"]["group"].as_str(), a["spec"]["version"].as_str())
        else {
            continue;
        };
        let priority = a["spec"]["versionPriority"].as_i64().unwrap_or(0);
        by_group
            .entry(g.to_string())
            .or_default()
            .push((priority, v.to_string()));
    }
    by_group
        .into_iter()
        .map(|(g, mut vs)| {
            vs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let gvs: Vec<Value> = vs
                .iter()
                .map(|(_, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": gvs, "preferredVersion": gvs.first().cloned()})
        })
        .collect()
}

/// Merge the aggregated groups into `/apis`' list (a group also served here gains the
/// aggregated versions it lacks).
pub fn merge_groups(list: &mut Vec<Value>, aggregated: Vec<Value>) {
    for g in aggregated {
        match list.iter_mut().find(|e| e["name"] == g["name"]) {
            Some(existing) => {
                let Some(versions) = existing["versions"].as_array_mut() else {
                    continue;
                };
                for v in g["versions"].as_array().into_iter().flatten() {
                    if !versions.iter().any(|e| e["version"] == v["version"]) {
                        versions.push(v.clone());
                    }
                }
            }
            None => list.push(g),
        }
    }
}

/// `/apis/<group>` of an aggregated group.
pub fn group(state: &State, name: &str) -> Option<Value> {
    let mut g = groups(state).into_iter().find(|g| g["name"] == name)?;
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_groups_keep_local_versions_first() {
        let mut list =
            vec![json!({"name": "a", "versions": [{"groupVersion": "a/v1", "version": "v1"}]})];
        merge_groups(
            &mut list,
            vec![
                json!({"name": "a", "versions": [{"groupVersion": "a/v1", "version": "v1"}, {"groupVersion": "a/v2", "version": "v2"}]}),
                json!({"name": "b", "versions": [{"groupVersion": "b/v1", "version": "v1"}]}),
            ],
        );
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["versions"].as_array().unwrap().len(), 2);
        assert_eq!(list[1]["name"], "b");
    }
}
