//! Impersonation (`kubectl --as USER --as-group G`): the `Impersonate-User`, `Impersonate-Group`
//! and `Impersonate-Uid` headers make a request act as another identity, if RBAC grants the real
//! caller `impersonate` on `users`, `groups`, `serviceaccounts` (for a service account's name,
//! in its namespace) and `uids` (authentication.k8s.io), as kube-apiserver's impersonation
//! filter does. The identity then gets `system:authenticated` (and a service account its groups
//! when no group is named).

use super::State;
use super::authn::{AUTHENTICATED, UserInfo};
use super::authz;
use crate::error::ApiError;
use crate::semantics::rbac::Attributes;
use axum::http::HeaderMap;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";

fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The identity `real` acts as: itself without impersonation headers, else the impersonated
/// one once every part of it is authorised (403 naming the first refused part).
pub fn apply(state: &State, real: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let user = values(headers, USER);
    let groups = values(headers, GROUP);
    let uid = values(headers, UID);
    let Some(&name) = user.first() else {
        if groups.is_empty() && uid.is_empty() {
            return Ok(real);
        }
        return Err(ApiError::bad_request(
            "impersonating groups or a uid requires impersonating a user (Impersonate-User)",
        ));
    };
    let check = |resource: &str, group: &str, namespace: &str, target: &str| {
        let mut a = Attributes {
            verb: "impersonate".into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: target.into(),
            ..Default::default()
        };
        authz::authorize(state, &real, &mut a)
    };
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((ns, sa)) => check("serviceaccounts", "", ns, sa)?,
        None => check("users", "", "", name)?,
    }
    for g in &groups {
        check("groups", "", "", g)?;
    }
    for u in &uid {
        check("uids", "authentication.k8s.io", "", u)?;
    }
    let mut identity = match (service_account, groups.is_empty()) {
        (Some((ns, sa)), true) => UserInfo::service_account(ns, sa, ""),
        _ => UserInfo::user(
            name,
            &groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
        ),
    };
    if !identity.groups.iter().any(|g| g == AUTHENTICATED) {
        identity.groups.push(AUTHENTICATED.into());
    }
    if let Some(u) = uid.first() {
        identity.uid = u.to_string();
    }
    Ok(identity)
}
