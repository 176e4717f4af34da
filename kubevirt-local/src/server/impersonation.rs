//! Impersonation (`kubectl --as USER --as-group G`, a kubeconfig's `as-user-extra`): the
//! `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-<key>`
//! headers make a request act as another identity, if RBAC grants the real caller `impersonate`
//! on `users`, `groups`, `serviceaccounts` (for a service account's name, in its namespace),
//! `uids` and `userextras/<key>` (both authentication.k8s.io; an extra's value is the resource
//! name), as kube-apiserver's impersonation filter does. The identity then gets
//! `system:authenticated` (and a service account its groups when no group is named), and the
//! extras (keys lower-cased and percent-decoded, as client-go escapes them).

use super::State;
use super::authn::{AUTHENTICATED, UserInfo};
use super::authz;
use crate::error::ApiError;
use crate::semantics::rbac::Attributes;
use axum::http::HeaderMap;
use std::collections::BTreeMap;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";
/// The resource whose subresource is an extra's key.
pub const USER_EXTRAS: &str = "userextras";

/// An extra's key from its header-name suffix: lower-cased (header names are case-insensitive)
/// and percent-decoded (Go's `url.PathUnescape`); `None` if an escape is malformed or the key
/// is not UTF-8.
pub fn unescape_extra_key(suffix: &str) -> Option<String> {
    let bytes = suffix.to_ascii_lowercase().into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `Impersonate-Extra-<key>` headers of a request: key, values.
fn extras(headers: &HeaderMap) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let Some(suffix) = name.as_str().strip_prefix(EXTRA_PREFIX) else {
            continue;
        };
        let key = unescape_extra_key(suffix).ok_or_else(|| {
            ApiError::bad_request(format!("{name}: not a valid escaped extra key"))
        })?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::bad_request(format!("{name}: the value is not text")))?;
        out.entry(key).or_default().push(value.to_string());
    }
    Ok(out)
}

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
    let extra = extras(headers)?;
    let Some(&name) = user.first() else {
        if groups.is_empty() && uid.is_empty() && extra.is_empty() {
            return Ok(real);
        }
        return Err(ApiError::bad_request(
            "impersonating groups, extras or a uid requires impersonating a user (Impersonate-User)",
        ));
    };
    let check_sub = |resource: &str, sub: &str, group: &str, namespace: &str, target: &str| {
        let mut a = Attributes {
            verb: "impersonate".into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: namespace.into(),
            name: target.into(),
            ..Default::default()
        };
        authz::authorize(state, &real, &mut a)
    };
    let check = |resource: &str, group: &str, namespace: &str, target: &str| {
        check_sub(resource, "", group, namespace, target)
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
    for (key, values) in &extra {
        for v in values {
            check_sub(USER_EXTRAS, key, "authentication.k8s.io", "", v)?;
        }
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
    identity.extra = extra;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_keys_are_lower_cased_and_unescaped_as_client_go_escapes_them() {
        let key = "example.com/Scopes:a b";
        let escaped = crate::server::aggregator::headers::escape_extra_key(key);
        assert_eq!(
            unescape_extra_key(&escaped).as_deref(),
            Some("example.com/scopes:a b")
        );
        assert_eq!(unescape_extra_key("Reason").as_deref(), Some("reason"));
        assert!(unescape_extra_key("bad%zz").is_none());
        assert!(unescape_extra_key("cut%4").is_none());
    }

    #[test]
    fn every_extra_header_value_is_kept_under_its_key() {
        let mut h = HeaderMap::new();
        h.append("impersonate-extra-scopes", "view".parse().unwrap());
        h.append("Impersonate-Extra-Scopes", "edit".parse().unwrap());
        h.append(
            "impersonate-extra-acme.io%2freason",
            "audit".parse().unwrap(),
        );
        h.append("impersonate-user", "x".parse().unwrap());
        let e = extras(&h).unwrap();
        assert_eq!(e["scopes"], ["view", "edit"]);
        assert_eq!(e["acme.io/reason"], ["audit"]);
        assert_eq!(e.len(), 2);
    }
}
