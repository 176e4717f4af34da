//! Object endpoints: list, get, create, update, patch, delete, and the status and scale
//! subresources. Every read-modify-write happens inside one storage transaction, so concurrent
//! writers see 409 Conflict, never a lost update.

use super::admission::{FieldValidation, Operation, admit};
use super::gc;
use super::route::Target;
use super::state::{CRD_RESOURCE, NAMESPACE_RESOURCE, State, now};
use super::table::{Include, partial_metadata, table};
use crate::error::ApiError;
use crate::registry::{Resource, crd_status, resource_from_crd};
use crate::semantics::lifecycle::{Endpoint, prepare_create, prepare_update};
use crate::semantics::patch::{self, PatchType};
use crate::semantics::schema::Cause;
use crate::semantics::selector::{FieldSelector, LabelSelector};
use crate::semantics::{apply, jsonpath};
use crate::storage::{EventType, ObjectKey, Txn};
use base64::Engine;
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

fn ok(code: u16, v: Value) -> Reply {
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
            || (s == "log" && res.kind == "Pod");
        if !known {
            return Err(ApiError::no_route());
        }
    }
    let mut reply = match (req.method, t.name.as_deref(), sub) {
        ("GET", None, None) => list(state, &res, t, req),
        ("POST", None, None) => create(state, &res, t, req),
        ("DELETE", None, None) => delete_collection(state, &res, t, req),
        ("GET", Some(name), Some("scale")) => get_scale(state, &res, &ns, name),
        ("GET", Some(_), Some("log")) => Ok(Reply {
            code: 200,
            body: Body::Text(String::new()),
            warnings: Vec::new(),
        }),
        ("GET", Some(name), _) => get(state, &res, &ns, name, t, req.shape),
        ("PUT", Some(name), s) => update(state, &res, t, name, s, req),
        ("PATCH", Some(name), s) => patch_object(state, &res, t, name, s, req),
        ("DELETE", Some(name), None) => delete(state, &res, &ns, name, t, req),
        _ => Err(ApiError::method_not_allowed()),
    }?;
    if let Some(w) = res.deprecated.get(&t.version) {
        reply.warnings.push(w.clone());
    }
    Ok(reply)
}

fn key(res: &Resource, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(
        res.storage_name(),
        if res.namespaced { ns } else { "" },
        name,
    )
}

/// Set the apiVersion the client asked in.
fn versioned(res: &Resource, version: &str, obj: Value) -> Value {
    let mut obj = res.present(obj);
    obj["apiVersion"] = json!(res.api_version(version));
    obj["kind"] = json!(res.kind);
    obj
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.starts_with(crate::semantics::protobuf::MAGIC) {
        return crate::semantics::protobuf::decode(body)
            .map_err(|e| ApiError::unsupported_media(e.to_string()));
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

fn dry_run(req: &Request<'_>) -> bool {
    req.query.get("dryRun").is_some_and(|v| v == "All")
}

fn field_validation(req: &Request<'_>) -> FieldValidation {
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

fn list(state: &State, res: &Resource, t: &Target, req: &Request<'_>) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(res, req.query)?;
    let (items, rv) = state
        .store
        .list(&res.storage_name(), t.namespace.as_deref())?;
    let mut items: Vec<Value> = items
        .into_iter()
        .map(|o| versioned(res, &t.version, o))
        .filter(|o| labels.matches(o["metadata"].get("labels")) && fields.matches(o))
        .collect();
    // Pagination: the continue token is the last key returned.
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if let Some(token) = req.query.get("continue").filter(|c| !c.is_empty()) {
        let last = engine
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        items.retain(|o| object_sort_key(o) > last);
    }
    let mut cont = String::new();
    let mut remaining = None;
    if let Some(limit) = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        remaining = Some(items.len() - limit);
        items.truncate(limit);
        cont = engine.encode(object_sort_key(items.last().unwrap_or(&Value::Null)));
    }
    let rv = rv.to_string();
    let body = match req.shape {
        Shape::Table => table(
            res,
            &items,
            &rv,
            &cont,
            Include::parse(req.query.get("includeObject").map(String::as_str)),
            jiff::Timestamp::now(),
        ),
        Shape::Metadata => {
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv, "continue": cont}, "items": items.iter().map(partial_metadata).collect::<Vec<_>>()})
        }
        Shape::Full => {
            let mut meta = json!({"resourceVersion": rv});
            if !cont.is_empty() {
                meta["continue"] = json!(cont);
                meta["remainingItemCount"] = json!(remaining);
            }
            json!({"apiVersion": res.api_version(&t.version), "kind": format!("{}List", res.kind), "metadata": meta, "items": items})
        }
    };
    Ok(ok(200, body))
}

fn object_sort_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn get(
    state: &State,
    res: &Resource,
    ns: &str,
    name: &str,
    t: &Target,
    shape: Shape,
) -> Result<Reply, ApiError> {
    let obj = state
        .store
        .get(&key(res, ns, name))?
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let obj = versioned(res, &t.version, obj);
    Ok(ok(
        200,
        match shape {
            Shape::Table => {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                table(
                    res,
                    std::slice::from_ref(&obj),
                    &rv,
                    "",
                    Include::Metadata,
                    jiff::Timestamp::now(),
                )
            }
            Shape::Metadata => partial_metadata(&obj),
            Shape::Full => obj,
        },
    ))
}

fn require_namespace(t: &mut Txn<'_>, res: &Resource, ns: &str) -> Result<(), ApiError> {
    if !res.namespaced {
        return Ok(());
    }
    let nsobj = t.get(&ObjectKey::new(NAMESPACE_RESOURCE, "", ns))?;
    match nsobj {
        None => Err(ApiError::namespace_not_found(ns)),
        Some(n) if n["metadata"].get("deletionTimestamp").is_some() => {
            Err(ApiError::forbidden(format!(
                "{} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                res.qualified()
            )))
        }
        Some(_) => Ok(()),
    }
}

fn create(state: &State, res: &Resource, t: &Target, req: &Request<'_>) -> Result<Reply, ApiError> {
    let body = parse_body(req.body)?;
    create_value(state, res, t, body, req)
}

fn create_value(
    state: &State,
    res: &Resource,
    t: &Target,
    obj: Value,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let mut obj = res.to_storage(obj);
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the body ({kind}) does not match the URL ({})",
            res.kind
        )));
    }
    obj["apiVersion"] = json!(res.api_version(&t.version));
    obj["kind"] = json!(res.kind);
    let ns = t.namespace.clone().unwrap_or_default();
    let now = now();
    let name = prepare_create(res, &mut obj, &ns, &now)?;
    let warnings = admit(
        res,
        &t.version,
        &mut obj,
        None,
        Operation::Create,
        field_validation(req),
        &state.cluster,
    )?;
    let is_crd = res.storage_name() == CRD_RESOURCE;
    if is_crd {
        resource_from_crd(&obj).map_err(|m| {
            let (field, message) = m.split_once(": ").unwrap_or(("spec", m.as_str()));
            ApiError::invalid(
                res,
                &name,
                &[Cause {
                    field: field.into(),
                    reason: "FieldValueInvalid",
                    message: message.into(),
                }],
            )
        })?;
        obj["status"] = crd_status(&obj, &now);
    }
    if res.group.is_empty() {
        crate::semantics::builtin_defaults::apply(&res.kind, &mut obj);
    }
    if res.kind == "Namespace" && res.group.is_empty() {
        obj["status"] = json!({"phase": "Active"});
        obj["spec"]["finalizers"] = json!(["kubernetes"]);
    }
    let k = key(res, &ns, &name);
    let stored = state.store.write(|tx| -> Result<Value, ApiError> {
        require_namespace(tx, res, &ns)?;
        if tx.get(&k)?.is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        if dry_run(req) {
            return Ok(obj.clone());
        }
        Ok(tx.put(&k, obj.clone(), EventType::Added)?)
    })?;
    if is_crd {
        state.refresh_registry()?;
    }
    Ok(Reply {
        code: 201,
        body: Body::Json(versioned(res, &t.version, stored)),
        warnings,
    })
}

fn endpoint_of(sub: Option<&str>) -> Endpoint {
    if sub == Some("status") {
        Endpoint::Status
    } else {
        Endpoint::Main
    }
}

/// Store `new` (prepared from `old`), or remove the object when it is being deleted and its last
/// finalizer is gone. Unchanged objects are not rewritten.
fn commit_update(
    tx: &mut Txn<'_>,
    k: &ObjectKey,
    old: &Value,
    new: Value,
) -> Result<Value, ApiError> {
    if *old == new {
        return Ok(new);
    }
    let deleting = new["metadata"].get("deletionTimestamp").is_some();
    let no_finalizers = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty);
    if deleting && no_finalizers {
        return Ok(tx.remove(k, new)?);
    }
    Ok(tx.put(k, new, EventType::Modified)?)
}

/// The shared tail of PUT and PATCH: update rules, admission, dry run, commit.
struct Update<'a> {
    state: &'a State,
    res: &'a Resource,
    version: &'a str,
    endpoint: Endpoint,
    req: &'a Request<'a>,
}

impl Update<'_> {
    fn finish(
        &self,
        tx: &mut Txn<'_>,
        k: &ObjectKey,
        old: &Value,
        wanted: Value,
        require_rv: bool,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let mut new = prepare_update(self.res, old, wanted, self.endpoint, require_rv)?;
        new["apiVersion"] = json!(self.res.api_version(self.version));
        new["kind"] = json!(self.res.kind);
        let op = if self.endpoint == Endpoint::Status {
            Operation::Status
        } else {
            Operation::Update
        };
        let warnings = admit(
            self.res,
            self.version,
            &mut new,
            Some(old),
            op,
            field_validation(self.req),
            &self.state.cluster,
        )?;
        if dry_run(self.req) {
            return Ok((new, warnings));
        }
        Ok((commit_update(tx, k, old, new)?, warnings))
    }
}

fn update(
    state: &State,
    res: &Resource,
    t: &Target,
    name: &str,
    sub: Option<&str>,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let body = parse_body(req.body)?;
    if sub == Some("scale") {
        return write_scale(state, res, t, name, |_| Ok(body.clone()), req);
    }
    let body = res.to_storage(body);
    let ns = t.namespace.clone().unwrap_or_default();
    let k = key(res, &ns, name);
    let endpoint = endpoint_of(sub);
    let mut warnings = Vec::new();
    let stored = state.store.write(|tx| -> Result<Value, ApiError> {
        let old = tx.get(&k)?.ok_or_else(|| ApiError::not_found(res, name))?;
        let update = Update {
            state,
            res,
            version: &t.version,
            endpoint,
            req,
        };
        let (stored, w) = update.finish(tx, &k, &old, body.clone(), true)?;
        warnings = w;
        Ok(stored)
    })?;
    after_write(state, res)?;
    Ok(Reply {
        code: 200,
        body: Body::Json(versioned(res, &t.version, stored)),
        warnings,
    })
}

fn patch_object(
    state: &State,
    res: &Resource,
    t: &Target,
    name: &str,
    sub: Option<&str>,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let kind = PatchType::from_content_type(req.content_type).ok_or_else(|| {
        ApiError::unsupported_media(format!(
            "the content type {:?} is not a patch type",
            req.content_type
        ))
    })?;
    if kind == PatchType::Strategic && !res.builtin {
        return Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; application/strategic-merge-patch+json is not supported by {}, Kind={}",
            res.api_version(&t.version),
            res.kind
        )));
    }
    let body = parse_body(req.body)?;
    if kind == PatchType::Apply && req.query.get("fieldManager").is_none_or(String::is_empty) {
        return Err(ApiError::bad_request(
            "PATCH of type application/apply-patch+yaml requires fieldManager",
        ));
    }
    if sub == Some("scale") {
        return write_scale(
            state,
            res,
            t,
            name,
            |scale| {
                let mut s = scale.clone();
                patch::apply(kind, &mut s, &body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                Ok(s)
            },
            req,
        );
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let k = key(res, &ns, name);
    let endpoint = endpoint_of(sub);
    let mut warnings = Vec::new();
    let mut created = false;
    let stored = state.store.write(|tx| -> Result<Value, ApiError> {
        let Some(old) = tx.get(&k)? else {
            if kind != PatchType::Apply || endpoint != Endpoint::Main {
                return Err(ApiError::not_found(res, name));
            }
            // Server-side apply creates.
            created = true;
            let mut obj = res.to_storage(apply_as(res, name, None, &body, req)?);
            obj["metadata"]["name"] = json!(name);
            obj["apiVersion"] = json!(res.api_version(&t.version));
            obj["kind"] = json!(res.kind);
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let now = now();
            prepare_create(res, &mut obj, &ns, &now)?;
            warnings = admit(
                res,
                &t.version,
                &mut obj,
                None,
                Operation::Create,
                field_validation(req),
                &state.cluster,
            )?;
            require_namespace(tx, res, &ns)?;
            if dry_run(req) {
                return Ok(obj);
            }
            return Ok(tx.put(&k, obj, EventType::Added)?);
        };
        // Patches are written against the resource's own view of the object.
        let mut patched = res.present(old.clone());
        if kind == PatchType::Apply {
            patched = apply_as(res, name, Some(&patched), &body, req)?;
        } else {
            patch::apply(kind, &mut patched, &body).map_err(|e| match e {
                patch::PatchError::Malformed(m) => ApiError::bad_request(m),
                patch::PatchError::Failed(m) => ApiError::invalid(
                    res,
                    name,
                    &[Cause {
                        field: String::new(),
                        reason: "FieldValueInvalid",
                        message: m,
                    }],
                ),
            })?;
        }
        let patched = res.to_storage(patched);
        let update = Update {
            state,
            res,
            version: &t.version,
            endpoint,
            req,
        };
        let (stored, w) = update.finish(tx, &k, &old, patched, false)?;
        warnings = w;
        Ok(stored)
    })?;
    after_write(state, res)?;
    Ok(Reply {
        code: if created { 201 } else { 200 },
        body: Body::Json(versioned(res, &t.version, stored)),
        warnings,
    })
}

/// Server-side apply as the request's field manager.
fn apply_as(
    res: &Resource,
    name: &str,
    current: Option<&Value>,
    body: &Value,
    req: &Request<'_>,
) -> Result<Value, ApiError> {
    let manager = req
        .query
        .get("fieldManager")
        .map(String::as_str)
        .unwrap_or_default();
    let force = req.query.get("force").is_some_and(|f| f == "true");
    apply::apply(current, body, manager, force, &now())
        .map_err(|c| ApiError::apply_conflicts(res, name, &c))
}

fn after_write(state: &State, res: &Resource) -> Result<(), ApiError> {
    if res.storage_name() == CRD_RESOURCE {
        state.refresh_registry()?;
    }
    Ok(())
}

fn scale_of(res: &Resource, obj: &Value) -> Value {
    let Some(s) = &res.scale else {
        return Value::Null;
    };
    let int = |p: &str| {
        jsonpath::select(obj, p)
            .first()
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
    };
    let mut status = json!({"replicas": int(&s.status_replicas)});
    if let Some(sel) = s.label_selector.as_deref().and_then(|p| {
        jsonpath::select(obj, p)
            .first()
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }) {
        status["selector"] = json!(sel);
    }
    let m = &obj["metadata"];
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": int(&s.spec_replicas)}, "status": status})
}

fn get_scale(state: &State, res: &Resource, ns: &str, name: &str) -> Result<Reply, ApiError> {
    let obj = state
        .store
        .get(&key(res, ns, name))?
        .ok_or_else(|| ApiError::not_found(res, name))?;
    Ok(ok(200, scale_of(res, &obj)))
}

fn write_scale(
    state: &State,
    res: &Resource,
    t: &Target,
    name: &str,
    change: impl Fn(&Value) -> Result<Value, ApiError>,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let Some(scale) = &res.scale else {
        return Err(ApiError::no_route());
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let k = key(res, &ns, name);
    let stored = state.store.write(|tx| -> Result<Value, ApiError> {
        let old = tx.get(&k)?.ok_or_else(|| ApiError::not_found(res, name))?;
        let current = scale_of(res, &old);
        let wanted = change(&current)?;
        if let Some(rv) = wanted["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(res, name));
        }
        let replicas = wanted["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?;
        let mut new = old.clone();
        let path: Vec<&str> = scale
            .spec_replicas
            .trim_start_matches('.')
            .split('.')
            .collect();
        let mut node = &mut new;
        for seg in &path {
            node = &mut node[*seg];
        }
        *node = json!(replicas);
        let mut new = prepare_update(res, &old, new, Endpoint::Main, false)?;
        admit(
            res,
            &t.version,
            &mut new,
            Some(&old),
            Operation::Update,
            FieldValidation::Warn,
            &state.cluster,
        )?;
        if dry_run(req) {
            return Ok(new);
        }
        commit_update(tx, &k, &old, new)
    })?;
    Ok(ok(200, scale_of(res, &stored)))
}

fn delete_options(req: &Request<'_>) -> Value {
    let mut opts = parse_body(req.body).unwrap_or_else(|_| json!({}));
    if let Some(p) = req.query.get("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    opts
}

fn delete(
    state: &State,
    res: &Resource,
    ns: &str,
    name: &str,
    t: &Target,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let opts = delete_options(req);
    let k = key(res, ns, name);
    let out = state.store.write(|tx| -> Result<Value, ApiError> {
        let old = tx.get(&k)?.ok_or_else(|| ApiError::not_found(res, name))?;
        if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str)
            && old["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(ApiError::conflict(res, name));
        }
        if let Some(rv) = opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            && old["metadata"]["resourceVersion"].as_str() != Some(rv)
        {
            return Err(ApiError::conflict(res, name));
        }
        if dry_run(req) {
            return Ok(old);
        }
        let policy = opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Background");
        gc::delete_in(tx, res, &k, old, policy, &now())
    })?;
    after_write(state, res)?;
    gc::collect(state);
    Ok(ok(200, versioned(res, &t.version, out)))
}

fn delete_collection(
    state: &State,
    res: &Resource,
    t: &Target,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(res, req.query)?;
    let (items, _) = state
        .store
        .list(&res.storage_name(), t.namespace.as_deref())?;
    let opts = delete_options(req);
    let policy = opts
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Background")
        .to_string();
    let mut deleted = Vec::new();
    for o in items.into_iter().filter(|o| {
        let shown = res.present(o.clone());
        labels.matches(shown["metadata"].get("labels")) && fields.matches(&shown)
    }) {
        let ns = o["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let k = key(res, &ns, &name);
        if dry_run(req) {
            deleted.push(versioned(res, &t.version, o));
            continue;
        }
        let out = state.store.write(|tx| -> Result<Option<Value>, ApiError> {
            match tx.get(&k)? {
                Some(old) => Ok(Some(gc::delete_in(tx, res, &k, old, &policy, &now())?)),
                None => Ok(None),
            }
        })?;
        deleted.extend(out.map(|o| versioned(res, &t.version, o)));
    }
    after_write(state, res)?;
    gc::collect(state);
    let rv = state.store.current_rv()?.to_string();
    Ok(ok(
        200,
        json!({"apiVersion": res.api_version(&t.version), "kind": format!("{}List", res.kind), "metadata": {"resourceVersion": rv}, "items": deleted}),
    ))
}
