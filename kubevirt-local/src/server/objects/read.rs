//! List and get.

use super::super::table::{Include, partial_metadata, table};
use super::{Reply, Request, Shape, key, ok, selectors, versioned};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::server::route::Target;
use crate::server::state::State;
use base64::Engine;
use serde_json::{Value, json};

pub(super) fn list(
    state: &State,
    res: &Resource,
    t: &Target,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(res, req.query)?;
    // A LIST reads and decodes every stored object of the resource: who asks, and how often,
    // is what an operator looking at the server's CPU wants to know.
    tracing::debug!(
        user = %req.user.name,
        resource = %res.storage_name(),
        namespace = t.namespace.as_deref().unwrap_or(""),
        query = ?req.query,
        "list"
    );
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

pub(super) fn get(
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
