//! `POST pods/{name}/binding`: what a scheduler calls to put a pod on a node. As upstream
//! (`pkg/registry/core/pod/storage` `BindingREST`): the pod must exist and not be bound already
//! (409 otherwise) and not be deleting; `spec.nodeName` is set and the `PodScheduled` condition
//! turns `True`; the answer is a `Success` Status.

use super::super::state::now;
use super::write::{after_write, commit_update};
use super::{Reply, Request, dry_run, key, ok, parse_body};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::schema::Cause;
use crate::server::route::Target;
use crate::server::state::State;
use serde_json::{Value, json};

/// The node a Binding body names (`target.name`, kind Node), or a 422 naming the bad field.
fn target_node(res: &Resource, name: &str, body: &Value) -> Result<String, ApiError> {
    let invalid = |field: &str, message: &str| {
        ApiError::invalid(
            res,
            name,
            &[Cause {
                field: field.into(),
                reason: "FieldValueInvalid",
                message: message.into(),
            }],
        )
    };
    if let Some(n) = body["metadata"]["name"].as_str()
        && !n.is_empty()
        && n != name
    {
        return Err(invalid(
            "metadata.name",
            &format!("Invalid value: \"{n}\": must be the pod's name \"{name}\""),
        ));
    }
    match body["target"]["kind"].as_str() {
        None | Some("") | Some("Node") => {}
        Some(k) => {
            return Err(invalid(
                "target.kind",
                &format!("Unsupported value: \"{k}\": supported values: \"Node\""),
            ));
        }
    }
    match body["target"]["name"].as_str() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(invalid(
            "target.name",
            "Required value: the node to bind to",
        )),
    }
}

/// Set `PodScheduled=True` (keeping the condition's other entries).
fn scheduled(pod: &mut Value) {
    let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
        "lastTransitionTime": now()});
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let status = &mut pod["status"];
    if status.get("phase").is_none() {
        status["phase"] = json!("Pending");
    }
    match status["conditions"].as_array_mut() {
        Some(list) => {
            list.retain(|c| c["type"] != "PodScheduled");
            list.push(cond);
        }
        None => status["conditions"] = json!([cond]),
    }
}

pub(super) fn bind(
    state: &State,
    res: &Resource,
    t: &Target,
    name: &str,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let body = parse_body(req.body)?;
    let node = target_node(res, name, &body)?;
    let ns = t.namespace.clone().unwrap_or_default();
    let k = key(res, &ns, name);
    state.store.write(|tx| -> Result<Value, ApiError> {
        let old = tx.get(&k)?.ok_or_else(|| ApiError::not_found(res, name))?;
        if old["metadata"].get("deletionTimestamp").is_some() {
            return Err(ApiError::conflict_message(
                res,
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(bound) = old["spec"]["nodeName"].as_str()
            && !bound.is_empty()
        {
            return Err(ApiError::conflict_message(
                res,
                name,
                &format!("pod {name} is already assigned to node \"{bound}\""),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        scheduled(&mut new);
        if dry_run(req) {
            return Ok(new);
        }
        commit_update(tx, &k, &old, new)
    })?;
    after_write(state, res)?;
    Ok(ok(
        201,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
