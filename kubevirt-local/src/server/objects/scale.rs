//! The scale subresource.

use super::super::admission::{FieldValidation, Operation, admit};
use super::write::commit_update;
use super::{Reply, Request, dry_run, key, ok};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::jsonpath;
use crate::semantics::lifecycle::{Endpoint, prepare_update};
use crate::server::route::Target;
use crate::server::state::State;
use serde_json::{Value, json};

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

pub(super) fn get_scale(
    state: &State,
    res: &Resource,
    ns: &str,
    name: &str,
) -> Result<Reply, ApiError> {
    let obj = state
        .store
        .get(&key(res, ns, name))?
        .ok_or_else(|| ApiError::not_found(res, name))?;
    Ok(ok(200, scale_of(res, &obj)))
}

pub(super) fn write_scale(
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
    super::write::after_write(state, res)?;
    Ok(ok(200, scale_of(res, &stored)))
}
