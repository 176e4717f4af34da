//! Delete and deletecollection (finalizers and propagation are in `gc`).

use super::super::gc;
use super::super::state::now;
use super::write::after_write;
use super::{Reply, Request, key, ok, parse_body, selectors, versioned};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::server::route::Target;
use crate::server::state::State;
use serde_json::{Value, json};

/// The DeleteOptions of a request: its body (kubectl sends `dryRun` and `propagationPolicy`
/// there) with the query's parameters on top.
fn delete_options(req: &Request<'_>) -> Result<Value, ApiError> {
    let mut opts = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(req.body)?
    };
    if !opts.is_object() {
        return Err(ApiError::bad_request(
            "the body of a delete must be a DeleteOptions object",
        ));
    }
    if let Some(p) = req.query.get("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    Ok(opts)
}

/// Whether a delete is a dry run: `dryRun=All` in the query or `dryRun: ["All"]` in the body.
/// Any other value is refused, as kube-apiserver does, so a typo never deletes for real.
fn delete_dry_run(req: &Request<'_>, opts: &Value) -> Result<bool, ApiError> {
    let from_body = match opts.get("dryRun") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values.iter().map(|v| v.as_str()).collect(),
        Some(_) => vec![None],
    };
    let from_query = req.query.get("dryRun").map(|v| Some(v.as_str()));
    let mut dry = false;
    for value in from_body.into_iter().chain(from_query) {
        match value {
            Some("All") => dry = true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: {}: supported values: \"All\"",
                    other.map_or_else(|| "a non-string".to_string(), |v| format!("{v:?}"))
                )));
            }
        }
    }
    Ok(dry)
}

pub(super) fn delete(
    state: &State,
    res: &Resource,
    ns: &str,
    name: &str,
    t: &Target,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let opts = delete_options(req)?;
    let dry = delete_dry_run(req, &opts)?;
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
        if dry {
            return Ok(old);
        }
        let policy = opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Background");
        gc::delete_in(tx, res, &k, old, policy, &now())
    })?;
    if !dry {
        after_write(state, res)?;
    }
    Ok(ok(200, versioned(res, &t.version, out)))
}

pub(super) fn delete_collection(
    state: &State,
    res: &Resource,
    t: &Target,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(res, req.query)?;
    let (items, _) = state
        .store
        .list(&res.storage_name(), t.namespace.as_deref())?;
    let opts = delete_options(req)?;
    let dry = delete_dry_run(req, &opts)?;
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
        if dry {
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
    if !dry {
        after_write(state, res)?;
    }
    let rv = state.store.current_rv()?.to_string();
    Ok(ok(
        200,
        json!({"apiVersion": res.api_version(&t.version), "kind": format!("{}List", res.kind), "metadata": {"resourceVersion": rv}, "items": deleted}),
    ))
}
