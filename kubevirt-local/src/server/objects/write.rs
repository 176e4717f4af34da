//! Create, update (PUT) and patch, each inside one storage transaction.

use super::super::admission::{Operation, admit};
use super::super::kubevirt_config;
use super::super::state::{CRD_RESOURCE, NAMESPACE_RESOURCE, now};
use super::claims;
use super::reads::Reads;
use super::scale::write_scale;
use super::service_accounts;
use super::{Body, Reply, Request, dry_run, field_validation, key, parse_body, versioned};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::registry::{crd_status, resource_from_crd};
use crate::semantics::apply;
use crate::semantics::claims::STORAGE_CLASSES;
use crate::semantics::lifecycle::{Endpoint, prepare_create, prepare_update};
use crate::semantics::patch::{self, PatchType};
use crate::semantics::schema::Cause;
use crate::semantics::validation::require_object;
use crate::server::route::Target;
use crate::server::state::State;
use crate::storage::{EventType, ObjectKey, Txn};
use serde_json::{Value, json};

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

pub(super) fn create(
    state: &State,
    res: &Resource,
    t: &Target,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
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
    let ns = t.namespace.clone().unwrap_or_default();
    let reads = Reads::Store(&state.store);
    let (name, obj, warnings) = admit_new(state, res, t, obj, req, &reads)?;
    if is_pod(res) {
        service_accounts::wait_for_default(&state.store, &ns, &obj)?;
    }
    let k = key(res, &ns, &name);
    let stored = state.store.write(|tx| -> Result<Value, ApiError> {
        require_namespace(tx, res, &ns)?;
        if tx.get(&k)?.is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        if is_pod(res) {
            service_accounts::require(tx, &ns, &obj)?;
        }
        if dry_run(req) {
            return Ok(obj.clone());
        }
        let stored = tx.put(&k, obj.clone(), EventType::Added)?;
        with_namespace(tx, res, &name)?;
        Ok(stored)
    })?;
    after_write(state, res)?;
    Ok(Reply {
        code: 201,
        body: Body::Json(versioned(res, &t.version, stored)),
        warnings,
    })
}

/// Whether `res` is the core Pod resource.
fn is_pod(res: &Resource) -> bool {
    res.group.is_empty() && res.kind == "Pod"
}

/// What comes with a new namespace `name` in its own transaction: its `default` service
/// account (see [`service_accounts`]).
fn with_namespace(tx: &mut Txn<'_>, res: &Resource, name: &str) -> Result<(), ApiError> {
    if res.group.is_empty() && res.kind == "Namespace" {
        service_accounts::ensure_default(tx, name, &now())?;
    }
    Ok(())
}

/// Everything a new object goes through before it is stored, whichever endpoint created it
/// (POST or a server-side apply of a missing object): server-owned metadata, admission, built-in
/// defaults, and the status the server gives CRDs and namespaces.
fn admit_new(
    state: &State,
    res: &Resource,
    t: &Target,
    obj: Value,
    req: &Request<'_>,
    reads: &Reads<'_, '_>,
) -> Result<(String, Value, Vec<String>), ApiError> {
    require_object(&obj)?;
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
    let cluster = if kubevirt_config::needed(&res.group, &res.kind) {
        kubevirt_config::defaults(
            &state.cluster,
            &reads.list(kubevirt_config::KUBEVIRTS, None)?,
        )
    } else {
        std::borrow::Cow::Borrowed(&state.cluster)
    };
    let warnings = admit(
        res,
        &t.version,
        &mut obj,
        None,
        Operation::Create,
        field_validation(req),
        &cluster,
    )?;
    super::super::escalation::check(state, req.user, res, &obj)?;
    if res.storage_name() == CRD_RESOURCE {
        resource_from_crd(&obj).map_err(|e| {
            ApiError::invalid(
                res,
                &name,
                &[Cause {
                    field: e.field.into(),
                    reason: e.reason,
                    message: e.message,
                }],
            )
        })?;
        obj["status"] = crd_status(&obj, &now);
    }
    if res.group.is_empty() {
        crate::semantics::builtin_defaults::apply(&res.kind, &mut obj);
        if res.kind == "Pod" {
            crate::semantics::service_accounts::admit_pod(&mut obj);
        }
    }
    claims::on_create(res, &mut obj, || reads.list(STORAGE_CLASSES, None))?;
    if res.group == "snapshot.kubevirt.io" && res.kind == "VirtualMachineRestore" {
        admit_restore(reads, res, &ns, &name, &obj)?;
    }
    if res.kind == "Namespace" && res.group.is_empty() {
        obj["status"] = json!({"phase": "Active"});
        obj["spec"]["finalizers"] = json!(["kubernetes"]);
    }
    Ok((name, obj, warnings))
}

/// Upstream's restore admitter's checks against the stored target, snapshot and restores.
fn admit_restore(
    reads: &Reads<'_, '_>,
    res: &Resource,
    ns: &str,
    name: &str,
    obj: &Value,
) -> Result<(), ApiError> {
    use crate::semantics::snapshots::{RESTORES, RestoreFacts, SNAPSHOTS, VMS, restore_causes};
    let get = |resource: &str, n: &Value| -> Result<Option<Value>, ApiError> {
        match n.as_str() {
            Some(n) if !n.is_empty() => reads.get(&ObjectKey::new(resource, ns, n)),
            _ => Ok(None),
        }
    };
    let target_name = &obj["spec"]["target"]["name"];
    let target = get(VMS, target_name)?;
    let snapshot = get(SNAPSHOTS, &obj["spec"]["virtualMachineSnapshotName"])?;
    let restores = reads.list(RESTORES, Some(ns))?;
    let causes = restore_causes(
        obj,
        RestoreFacts {
            target: target.as_ref(),
            snapshot: snapshot.as_ref(),
            restores: &restores,
        },
    );
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, name, &causes))
    }
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
pub(super) fn commit_update(
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
    // A pod in its grace period (deletionGracePeriodSeconds > 0) stays until its kubelet deletes it.
    let graceful = new["metadata"]["deletionGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g > 0);
    if deleting && no_finalizers && !graceful {
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
        require_object(&wanted)?;
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
        super::super::escalation::check(self.state, self.req.user, self.res, &new)?;
        if op == Operation::Update {
            claims::on_update(tx, self.res, old, &mut new)?;
        }
        claims::on_phase(self.res, old, &mut new, &now());
        if dry_run(self.req) {
            return Ok((new, warnings));
        }
        Ok((commit_update(tx, k, old, new)?, warnings))
    }
}

pub(super) fn update(
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
    require_object(&body)?;
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

pub(super) fn patch_object(
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
            let mut applied = apply_as(res, name, None, &body, req)?;
            applied["metadata"]["name"] = json!(name);
            if let Some(m) = applied["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let (_, obj, w) = admit_new(state, res, t, applied, req, &Reads::Txn(tx))?;
            warnings = w;
            require_namespace(tx, res, &ns)?;
            if is_pod(res) {
                service_accounts::require(tx, &ns, &obj)?;
            }
            if dry_run(req) {
                return Ok(obj);
            }
            let stored = tx.put(&k, obj, EventType::Added)?;
            with_namespace(tx, res, name)?;
            return Ok(stored);
        };
        // Patches are written against the resource's own view of the object.
        let mut patched = res.present(old.clone());
        if kind == PatchType::Apply {
            patched = apply_as(res, name, Some(&patched), &body, req)?;
        } else {
            patch::apply(kind, &mut patched, &body).map_err(|e| {
                if e.is_malformed() {
                    ApiError::bad_request(e.to_string())
                } else {
                    ApiError::invalid(
                        res,
                        name,
                        &[Cause {
                            field: String::new(),
                            reason: "FieldValueInvalid",
                            message: e.to_string(),
                        }],
                    )
                }
            })?;
        }
        require_object(&patched)?;
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
    require_object(body)?;
    apply::apply(current, body, manager, force, &now())
        .map_err(|c| ApiError::apply_conflicts(res, name, &c))
}

/// What follows every write before its reply: CRD changes reach the registry, and garbage
/// collection handles what the write changed (a dependent written after its owner went, or
/// began a foreground delete, is collected now, as the cluster's collector would on seeing it).
pub(super) fn after_write(state: &State, res: &Resource) -> Result<(), ApiError> {
    if res.storage_name() == CRD_RESOURCE {
        state.refresh_registry()?;
    }
    super::super::gc::collect(state);
    if let Err(e) = state.authorizer.reconcile_aggregation(state) {
        tracing::warn!(error = %e, "ClusterRole aggregation");
    }
    Ok(())
}
