//! Admission: what runs between decoding a write and storing it. Structural-schema pruning,
//! defaulting and validation for every custom resource, then, for KubeVirt and CDI kinds, the
//! defaulting and validation upstream runs in its webhooks (kubevirt-api's `defaults` and
//! `validation`).

use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::schema::{self, Cause};
use kubevirt_api::defaults::{ClusterDefaults, apply};
use kubevirt_api::object::Object;
use kubevirt_api::validation::{FieldError, validate, validate_update};
use serde_json::Value;

/// What kind of write is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A change to an existing object through its main endpoint.
    Update,
    /// A change through `/status`: only the schema applies.
    Status,
}

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject (400).
    Strict,
    /// Prune and warn (the server default).
    Warn,
    /// Prune silently.
    Ignore,
}

impl FieldValidation {
    /// From the query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// Admit `obj` (already carrying its server-owned metadata). Returns warnings for the response.
pub fn admit(
    res: &Resource,
    version: &str,
    obj: &mut Value,
    old: Option<&Value>,
    op: Operation,
    fields: FieldValidation,
    cluster: &ClusterDefaults,
) -> Result<Vec<String>, ApiError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut warnings = Vec::new();
    if let Some(s) = res.schema(version) {
        let checked = schema::check_update(s, obj, old);
        if !checked.unknown.is_empty() {
            let list: Vec<String> = checked
                .unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            match fields {
                FieldValidation::Strict => {
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{version}\" cannot be handled as a {}: strict decoding error: {}",
                        res.kind,
                        res.kind,
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => warnings.extend(list),
                FieldValidation::Ignore => {}
            }
        }
        if !checked.causes.is_empty() {
            return Err(ApiError::invalid(res, &name, &checked.causes));
        }
    }
    if op == Operation::Status || !res.group.ends_with("kubevirt.io") {
        return Ok(warnings);
    }
    let mut typed = match Object::decode(obj) {
        Ok(o) => o,
        Err(kubevirt_api::codec::DecodeError::UnknownKind { .. }) => return Ok(warnings),
        Err(e) => {
            return Err(ApiError::invalid(
                res,
                &name,
                &[Cause {
                    field: String::new(),
                    reason: "FieldValueInvalid",
                    message: e.to_string(),
                }],
            ));
        }
    };
    apply(&mut typed, cluster);
    let errors = match old.map(Object::decode) {
        Some(Ok(old)) => validate_update(&old, &typed),
        _ => validate(&typed),
    };
    if !errors.is_empty() {
        return Err(ApiError::invalid(res, &name, &causes(&errors)));
    }
    let mut encoded = typed
        .encode()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // Keep the requested apiVersion (older served versions share the schema).
    encoded["apiVersion"] = obj["apiVersion"].clone();
    *obj = encoded;
    Ok(warnings)
}

fn causes(errors: &[FieldError]) -> Vec<Cause> {
    errors
        .iter()
        .map(|e| Cause {
            field: e.path.to_string(),
            reason: e.kind.reason(),
            message: e.message.clone(),
        })
        .collect()
}
