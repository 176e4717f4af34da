//! The review APIs, answered from the request's identity and the authorizer, never stored:
//! `SelfSubjectAccessReview` (`kubectl auth can-i`), `SelfSubjectRulesReview` (`kubectl auth
//! can-i --list`), `SubjectAccessReview` and
//! `LocalSubjectAccessReview` (for callers allowed to ask about others) in
//! `authorization.k8s.io/v1`, and `SelfSubjectReview` (`kubectl auth whoami`) in
//! `authentication.k8s.io/v1`, and `TokenReview` (for callers RBAC lets create them, such as
//! `system:auth-delegator`'s: an aggregated API server like virt-api authenticating its callers);
//! plus their discovery documents.

use super::State;
use super::authn::UserInfo;
use super::route::Target;
use crate::error::ApiError;
use crate::semantics::rbac::Attributes;
use serde_json::{Value, json};

/// The group of the access reviews.
pub const AUTHORIZATION: &str = "authorization.k8s.io";
/// The group of the identity reviews.
pub const AUTHENTICATION: &str = "authentication.k8s.io";

/// Whether `t` is one of the review endpoints.
pub fn is_review(t: &Target) -> bool {
    t.version == "v1"
        && t.name.is_none()
        && matches!(
            (t.group.as_str(), t.plural.as_str(), t.namespace.is_some()),
            (
                AUTHORIZATION,
                "selfsubjectaccessreviews" | "selfsubjectrulesreviews" | "subjectaccessreviews",
                false
            ) | (AUTHORIZATION, "localsubjectaccessreviews", true)
                | (AUTHENTICATION, "selfsubjectreviews" | "tokenreviews", false)
        )
}

/// The `/apis` entries of the review groups.
pub fn groups() -> Vec<Value> {
    [AUTHENTICATION, AUTHORIZATION]
        .iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv], "preferredVersion": gv})
        })
        .collect()
}

/// `/apis/{group}` of a review group.
pub fn group(group: &str) -> Option<Value> {
    let mut g = groups().into_iter().find(|g| g["name"] == group)?;
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `/apis/{group}/v1` of a review group.
pub fn resources(group: &str, version: &str) -> Option<Value> {
    let entry = |name: &str, kind: &str, namespaced: bool| json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind, "verbs": ["create"]});
    let list = match (group, version) {
        (AUTHORIZATION, "v1") => vec![
            entry(
                "localsubjectaccessreviews",
                "LocalSubjectAccessReview",
                true,
            ),
            entry("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
            entry("selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
            entry("subjectaccessreviews", "SubjectAccessReview", false),
        ],
        (AUTHENTICATION, "v1") => vec![
            entry("selfsubjectreviews", "SelfSubjectReview", false),
            entry("tokenreviews", "TokenReview", false),
        ],
        _ => return None,
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/v1"), "resources": list}),
    )
}

/// Answer a POST to a review endpoint by `user` (already authorised to create it).
pub fn answer(
    state: &State,
    user: &UserInfo,
    t: &Target,
    method: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    if method != "POST" {
        return Err(ApiError::method_not_allowed());
    }
    // kubectl's typed clients send Kubernetes protobuf, others JSON.
    let mut review = super::objects::parse_body(body)?;
    if !review.is_object() {
        return Err(ApiError::bad_request("a review must be a JSON object"));
    }
    let kind = match t.plural.as_str() {
        "selfsubjectreviews" => {
            return Ok(
                json!({"apiVersion": format!("{AUTHENTICATION}/v1"), "kind": "SelfSubjectReview",
                "metadata": {"creationTimestamp": null},
                "status": {"userInfo": user.to_json()}}),
            );
        }
        "tokenreviews" => {
            let token = review["spec"]["token"].as_str().unwrap_or_default();
            let found = state
                .token
                .as_deref()
                .filter(|_| !token.is_empty())
                .and_then(|secret| super::authn::token_user(state, secret, token));
            review["status"] = match found {
                Some(u) => json!({"authenticated": true,
                    "user": u.to_json(),
                    "audiences": [crate::semantics::token::ISSUER]}),
                None => json!({"authenticated": false, "error": "the token is not valid"}),
            };
            review["apiVersion"] = json!(format!("{AUTHENTICATION}/v1"));
            review["kind"] = json!("TokenReview");
            return Ok(review);
        }
        "selfsubjectrulesreviews" => {
            let ns = review["spec"]["namespace"].as_str().unwrap_or_default();
            let rules = state
                .authorizer
                .index(state)?
                .rules_for(&user.name, &user.groups, ns);
            let (paths, resources): (Vec<Value>, Vec<Value>) = rules
                .into_iter()
                .partition(|r| r.get("nonResourceURLs").is_some());
            review["status"] =
                json!({"resourceRules": resources, "nonResourceRules": paths, "incomplete": false});
            review["apiVersion"] = json!(format!("{AUTHORIZATION}/v1"));
            review["kind"] = json!("SelfSubjectRulesReview");
            return Ok(review);
        }
        "selfsubjectaccessreviews" => "SelfSubjectAccessReview",
        "subjectaccessreviews" => "SubjectAccessReview",
        _ => "LocalSubjectAccessReview",
    };
    let spec = &review["spec"];
    let mut a = match (
        spec["resourceAttributes"].as_object(),
        spec["nonResourceAttributes"].as_object(),
    ) {
        (Some(r), _) => {
            let text = |k: &str| {
                r.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Attributes {
                verb: text("verb"),
                api_group: text("group"),
                resource: text("resource"),
                subresource: text("subresource"),
                namespace: text("namespace"),
                name: text("name"),
                ..Default::default()
            }
        }
        (None, Some(n)) => Attributes {
            verb: n
                .get("verb")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            path: n
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            ..Default::default()
        },
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "{kind}: exactly one of spec.resourceAttributes and spec.nonResourceAttributes must be set"
            )));
        }
    };
    if kind == "LocalSubjectAccessReview" {
        let ns = t.namespace.clone().unwrap_or_default();
        if !a.namespace.is_empty() && a.namespace != ns {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match the request's namespace {ns:?}"
            )));
        }
        a.namespace = ns;
    }
    if kind == "SelfSubjectAccessReview" {
        a.user.clone_from(&user.name);
        a.groups.clone_from(&user.groups);
    } else {
        a.user = spec["user"].as_str().unwrap_or_default().to_string();
        a.groups = spec["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    }
    let allowed = state.authorizer.index(state)?.allows(&a);
    review["status"] = match allowed {
        Some(reason) => json!({"allowed": true, "reason": reason}),
        None => json!({"allowed": false}),
    };
    review["apiVersion"] = json!(format!("{AUTHORIZATION}/v1"));
    review["kind"] = json!(kind);
    if review["metadata"].is_null() {
        review["metadata"] = json!({"creationTimestamp": null});
    }
    Ok(review)
}
