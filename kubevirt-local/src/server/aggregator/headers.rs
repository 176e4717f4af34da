//! The request an aggregated server receives: the caller's own credentials and any identity
//! headers it sent are dropped, and the identity this server authenticated is carried in the
//! front proxy's headers (`X-Remote-User`, one `X-Remote-Group` per group,
//! `X-Remote-Extra-<key>`), as kube-aggregator's `SetAuthProxyHeaders` does.

use super::frontproxy::{EXTRA_PREFIX, GROUP_HEADER, USER_HEADER};
use crate::server::authn::UserInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// The group and version an `/apis/<group>/<version>[/...]` path names.
pub fn group_version(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/apis/")?;
    let mut segs = rest.splitn(3, '/');
    let group = segs.next().filter(|g| !g.is_empty())?;
    let version = segs.next().filter(|v| !v.is_empty())?;
    Some((group, version))
}

/// The APIService name of a group and version (`v1.subresources.kubevirt.io`).
pub fn apiservice_name(group: &str, version: &str) -> String {
    format!("{version}.{group}")
}

/// Whether the caller's header `name` must not reach the aggregated server: its credentials,
/// impersonation requests and identity headers it could forge.
fn dropped(name: &HeaderName) -> bool {
    let n = name.as_str();
    name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::HOST
        || n.starts_with("impersonate-")
        || n.starts_with("x-remote-")
}

/// The extra key as a header suffix: percent-encoded as Go's `url.PathEscape` does, so any key
/// (`/`, `:`, spaces, unicode) fits in a header name.
pub fn escape_extra_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The headers to send: `incoming` without the dropped ones, the Host of the service, and the
/// caller's identity; `extra` are its extra attributes (key, values).
pub fn forwarded(
    incoming: &HeaderMap,
    user: &UserInfo,
    extra: &[(String, Vec<String>)],
    host: &str,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        if !dropped(name) {
            out.append(name.clone(), value.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        out.insert(header::HOST, v);
    }
    if let Ok(v) = HeaderValue::from_str(&user.name) {
        out.insert(USER_HEADER, v);
    }
    for g in &user.groups {
        if let Ok(v) = HeaderValue::from_str(g) {
            out.append(GROUP_HEADER, v);
        }
    }
    for (key, values) in extra {
        let Ok(name) =
            HeaderName::from_bytes(format!("{EXTRA_PREFIX}{}", escape_extra_key(key)).as_bytes())
        else {
            continue;
        };
        for value in values {
            if let Ok(v) = HeaderValue::from_str(value) {
                out.append(name.clone(), v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_name_their_group_version() {
        assert_eq!(
            group_version("/apis/subresources.kubevirt.io/v1/namespaces/d/x"),
            Some(("subresources.kubevirt.io", "v1"))
        );
        assert_eq!(group_version("/apis/g/v1"), Some(("g", "v1")));
        assert_eq!(group_version("/apis/g"), None);
        assert_eq!(group_version("/apis/g/"), None);
        assert_eq!(group_version("/api/v1/pods"), None);
        assert_eq!(apiservice_name("g.io", "v1"), "v1.g.io");
    }

    #[test]
    fn the_callers_credentials_and_forged_identity_never_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        h.insert("x-remote-user", "root".parse().unwrap());
        h.insert("x-remote-group", "system:masters".parse().unwrap());
        h.insert("impersonate-user", "root".parse().unwrap());
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        let user = UserInfo::user("alice", &["devs".to_string()]);
        let extra = vec![("scopes.io/a b".to_string(), vec!["x".to_string()])];
        let out = forwarded(&h, &user, &extra, "virt-api.kubevirt.svc");
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert!(out.get("impersonate-user").is_none());
        assert_eq!(out["x-remote-user"], "alice");
        let groups: Vec<_> = out.get_all("x-remote-group").iter().collect();
        assert_eq!(groups, ["devs", "system:authenticated"]);
        assert_eq!(out["x-remote-extra-scopes.io%2Fa%20b"], "x");
        assert_eq!(out[header::ACCEPT], "application/json");
        assert_eq!(out[header::UPGRADE], "websocket");
        assert_eq!(out[header::HOST], "virt-api.kubevirt.svc");
    }

    proptest! {
        #[test]
        fn any_extra_key_makes_a_valid_header_name(key in "\\PC{0,40}") {
            let name = format!("{EXTRA_PREFIX}{}", escape_extra_key(&key));
            prop_assert!(HeaderName::from_bytes(name.as_bytes()).is_ok());
        }

        #[test]
        fn any_path_parses_without_panicking(path in "\\PC{0,80}") {
            if let Some((g, v)) = group_version(&path) {
                prop_assert!(!g.is_empty() && !v.is_empty() && !g.contains('/') && !v.contains('/'));
                let prefix = format!("/apis/{g}/{v}");
                prop_assert!(path.starts_with(&prefix));
            }
        }
    }
}
