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
        let mut old = old;
        if let Some(grace) = graceful_pod_delete(res, &old, &opts)
            && node_alive(tx, &old)?
        {
            if grace > 0 {
                // A running pod ends gracefully: its kubelet stops the containers within the
                // grace period, then deletes the object with grace 0.
                if old["metadata"].get("deletionTimestamp").is_some() {
                    return Ok(old);
                }
                let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
                old["metadata"]["deletionTimestamp"] = json!(
                    jiff::Timestamp::from_second(at.as_second())
                        .map_or_else(|_| now(), |t| t.to_string())
                );
                old["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                return Ok(tx.put(&k, old, crate::storage::EventType::Modified)?);
            }
            if old["metadata"].get("deletionTimestamp").is_some() {
                old["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
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

/// Whether the pod's node has a kubelet: its Lease in `kube-node-lease` was renewed within the
/// lease's duration. A pod on a node nobody serves is deleted at once instead of waiting forever.
fn node_alive(tx: &mut crate::storage::Txn<'_>, pod: &Value) -> Result<bool, ApiError> {
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = crate::storage::ObjectKey::new("coordination.k8s.io/leases", "kube-node-lease", node);
    let Some(lease) = tx.get(&key)? else {
        return Ok(false);
    };
    let renewed = lease
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let duration = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(40);
    Ok(renewed.is_some_and(|t| {
        jiff::Timestamp::now().duration_since(t) < jiff::SignedDuration::from_secs(duration)
    }))
}

/// For a pod bound to a node and not finished, the grace period of its deletion
/// (`gracePeriodSeconds`, else `spec.terminationGracePeriodSeconds`, else 30), as kube-apiserver
/// gives it; `None` for anything else (deleted at once).
fn graceful_pod_delete(res: &Resource, old: &Value, opts: &Value) -> Option<i64> {
    if !res.group.is_empty() || res.plural != "pods" {
        return None;
    }
    let bound = old
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        old.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return None;
    }
    let grace = opts
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| {
            old.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    Some(grace.max(0))
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
