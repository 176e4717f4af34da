//! `POST serviceaccounts/{name}/token`: the TokenRequest API (`kubectl create token`). The
//! service account must exist; `spec.expirationSeconds` defaults to an hour and must be at least
//! ten minutes (upstream); `spec.audiences` defaults to the API server's own. The token is a
//! JWT the server accepts as a bearer token while it is valid and its service account exists.

use super::{Reply, Request, key, ok, parse_body};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::schema::Cause;
use crate::semantics::token::{ISSUER, ServiceAccountRef, Signer};
use crate::server::route::Target;
use crate::server::state::State;
use serde_json::{Value, json};

/// Upstream's bounds on `spec.expirationSeconds`.
const MIN_SECONDS: i64 = 600;
const MAX_SECONDS: i64 = 1 << 32;

pub(super) fn create_token(
    state: &State,
    res: &Resource,
    t: &Target,
    name: &str,
    req: &Request<'_>,
) -> Result<Reply, ApiError> {
    let body = parse_body(req.body)?;
    let invalid = |field: &str, message: String| {
        ApiError::invalid(
            res,
            name,
            &[Cause {
                field: field.into(),
                reason: "FieldValueInvalid",
                message,
            }],
        )
    };
    let seconds = match &body["spec"]["expirationSeconds"] {
        Value::Null => 3600,
        v => v.as_i64().ok_or_else(|| {
            invalid(
                "spec.expirationSeconds",
                format!("Invalid value: {v}: must be an integer"),
            )
        })?,
    };
    if seconds < MIN_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
        ));
    }
    if seconds > MAX_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            format!(
                "Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let audiences: Vec<String> = match &body["spec"]["audiences"] {
        Value::Null => vec![ISSUER.to_string()],
        Value::Array(list) if list.is_empty() => vec![ISSUER.to_string()],
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.as_str().map(str::to_string).ok_or_else(|| {
                    invalid(
                        &format!("spec.audiences[{i}]"),
                        format!("Invalid value: {a}: must be a string"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        v => {
            return Err(invalid(
                "spec.audiences",
                format!("Invalid value: {v}: must be a list"),
            ));
        }
    };
    let ns = t.namespace.clone().unwrap_or_default();
    let sa = state
        .store
        .get(&key(res, &ns, name))?
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let sa = ServiceAccountRef {
        namespace: ns.clone(),
        name: name.to_string(),
        uid: sa["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let now = jiff::Timestamp::now().as_second();
    let signer = Signer::from_secret(state.token.as_deref().unwrap_or_default().as_bytes());
    let token = signer.issue(&sa, &audiences, now, seconds);
    let expires = jiff::Timestamp::from_second(now + seconds)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Ok(ok(
        201,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": body["spec"]["boundObjectRef"]},
            "status": {"token": token, "expirationTimestamp": expires}}),
    ))
}

/// Who `token` speaks for, if it is a service account token this server issued, still valid
/// for the API server's audience, whose service account still exists with the same uid.
pub(crate) fn service_account_of(state: &State, token: &str) -> Option<ServiceAccountRef> {
    let signer = Signer::from_secret(state.token.as_deref().unwrap_or_default().as_bytes());
    let sa = signer
        .verify(token, ISSUER, jiff::Timestamp::now().as_second())
        .ok()?;
    let res = state.registry().find("", "v1", "serviceaccounts")?;
    let stored = state
        .store
        .get(&key(&res, &sa.namespace, &sa.name))
        .ok()??;
    (stored["metadata"]["uid"].as_str() == Some(sa.uid.as_str())).then_some(sa)
}
