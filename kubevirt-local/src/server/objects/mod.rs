//! Object endpoints: list, get, create, update, patch, delete, and the status, scale and
//! binding subresources. Every read-modify-write happens inside one storage transaction, so concurrent
//! writers see 409 Conflict, never a lost update.

mod binding;
mod claims;
mod delete;
mod read;
mod reads;
mod scale;
pub(crate) mod service_accounts;
mod token;

pub(crate) use token::service_account_of;
mod write;

use super::admission::FieldValidation;
use super::route::Target;
use super::state::State;
use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::selector::{FieldSelector, LabelSelector};
use crate::storage::ObjectKey;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Plain objects.
    Full,
    /// `meta.k8s.io/v1` Table.
    Table,
    /// `PartialObjectMetadata(List)`.
    Metadata,
}

impl Shape {
    /// From an `Accept` header: the first supported form wins.
    pub fn from_accept(accept: &str) -> Self {
        for part in accept.split(',') {
            if part.contains("as=Table") {
                return Shape::Table;
            }
            if part.contains("as=PartialObjectMetadata") {
                return Shape::Metadata;
            }
            if part.trim().starts_with("application/json") || part.trim().starts_with("*/*") {
                return Shape::Full;
            }
        }
        Shape::Full
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub code: u16,
    /// JSON body (or text for logs).
    pub body: Body,
    /// `Warning` headers.
    pub warnings: Vec<String>,
}

/// A reply body.
#[derive(Debug)]
pub enum Body {
    /// JSON.
    Json(Value),
    /// Plain text.
    Text(String),
}

pub(super) fn ok(code: u16, v: Value) -> Reply {
    Reply {
        code,
        body: Body::Json(v),
        warnings: Vec::new(),
    }
}

/// One API request, parsed.
#[derive(Debug)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The addressed resource path.
    pub target: &'a Target,
    /// Query parameters.
    pub query: &'a BTreeMap<String, String>,
    /// Accept shape.
    pub shape: Shape,
    /// Content-Type.
    pub content_type: &'a str,
    /// Body.
    pub body: &'a [u8],
    /// Who asks (already authorised for the request itself); writes of roles and bindings are
    /// also checked against what it holds.
    pub user: &'a super::authn::UserInfo,
}

/// Resolve the target's resource and check its scope.
pub fn resolve(state: &State, t: &Target) -> Result<Arc<Resource>, ApiError> {
    let res = state
        .registry()
        .find(&t.group, &t.version, &t.plural)
        .ok_or_else(ApiError::no_route)?;
    if !res.namespaced && t.namespace.is_some() {
        return Err(ApiError::no_route());
    }
    if res.namespaced && t.namespace.is_none() && t.name.is_some() {
        return Err(ApiError::no_route());
    }
    Ok(res)
}

/// Handle one non-watch request.
pub fn handle(state: &State, req: &Request<'_>) -> Result<Reply, ApiError> {
    let res = resolve(state, req.target)?;
    let t = req.target;
    let ns = t.namespace.clone().unwrap_or_default();
    let sub = t.sub.as_deref();
    if let Some(s) = sub {
        let known = (s == "status" && res.status)
            || (s == "scale" && res.scale.is_some())
            || (s == "binding" && res.kind == "Pod" && res.group.is_empty())
            || (s == "token" && res.kind == "ServiceAccount" && res.group.is_empty());
        if !known {
            return Err(ApiError::no_route());
        }
    }
    let mut reply = match (req.method, t.name.as_deref(), sub) {
        ("GET", None, None) => read::list(state, &res, t, req),
        ("POST", None, None) => write::create(state, &res, t, req),
        ("DELETE", None, None) => delete::delete_collection(state, &res, t, req),
        ("POST", Some(name), Some("binding")) => binding::bind(state, &res, t, name, req),
        ("POST", Some(name), Some("token")) => token::create_token(state, &res, t, name, req),
        ("GET", Some(name), Some("scale")) => scale::get_scale(state, &res, &ns, name),
        ("GET", Some(name), _) => read::get(state, &res, &ns, name, t, req.shape),
        ("PUT", Some(name), s) => write::update(state, &res, t, name, s, req),
        ("PATCH", Some(name), s) => write::patch_object(state, &res, t, name, s, req),
        ("DELETE", Some(name), None) => delete::delete(state, &res, &ns, name, t, req),
        _ => Err(ApiError::method_not_allowed()),
    }?;
    if let Some(w) = res.deprecated.get(&t.version) {
        reply.warnings.push(w.clone());
    }
    Ok(reply)
}

pub(super) fn key(res: &Resource, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(
        res.storage_name(),
        if res.namespaced { ns } else { "" },
        name,
    )
}

/// Set the apiVersion the client asked in.
pub(super) fn versioned(res: &Resource, version: &str, obj: Value) -> Value {
    let mut obj = res.present(obj);
    obj["apiVersion"] = json!(res.api_version(version));
    obj["kind"] = json!(res.kind);
    obj
}

pub(super) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.starts_with(crate::semantics::protobuf::MAGIC) {
        use crate::semantics::protobuf::{ProtobufError, decode};
        return decode(body).map_err(|e| match e {
            ProtobufError::Unsupported(_) => ApiError::unsupported_media(e.to_string()),
            ProtobufError::Malformed { .. } => ApiError::bad_request(e.to_string()),
        });
    }
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let docs = kubevirt_api::codec::documents_from_yaml(text)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    docs.into_iter()
        .next()
        .map(|d| d.value)
        .ok_or_else(|| ApiError::bad_request("the body is empty"))
}

pub(super) fn dry_run(req: &Request<'_>) -> bool {
    req.query.get("dryRun").is_some_and(|v| v == "All")
}

pub(super) fn field_validation(req: &Request<'_>) -> FieldValidation {
    FieldValidation::parse(req.query.get("fieldValidation").map(String::as_str))
}

pub(crate) fn selectors(
    res: &Resource,
    q: &BTreeMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        &res.selectable_fields,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}
