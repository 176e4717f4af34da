//! Authentication: every request's client certificate or bearer token mapped to a user (name,
//! uid, groups), as kube-apiserver's x509 and token authenticators do, in its order: a client
//! certificate the client CA verifies first ([`crate::x509`]: CN the name, O the groups), then
//! the bearer token. A certificate that does not verify authenticates no one, and the token (if
//! any) decides, as in kube-apiserver's union authenticator. Three kinds of token are accepted:
//! - the data directory's own token (`up`'s and `apiserver`'s kubeconfig): the administrator,
//!   in `system:masters`, which authorisation never refuses;
//! - service-account tokens this server issued (TokenRequest, the ones mounted into pods):
//!   `system:serviceaccount:NS:NAME` in `system:serviceaccounts` and
//!   `system:serviceaccounts:NS`;
//! - user tokens (`kubevirt-local kubeconfig --user`): the name and groups they were issued
//!   with.
//!
//! Every authenticated user is also in `system:authenticated`. Without a token, or with one
//! that does not verify or has expired, the request gets a 401.

use super::State;
use crate::error::ApiError;
use crate::semantics::user_token::UserSigner;
use crate::x509::PeerChain;
use axum::http::{HeaderMap, header};
use std::collections::BTreeMap;

/// The administrator's user name (the data directory's token).
pub const ADMIN_USER: &str = "kubevirt-local-admin";
/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of every service account.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

/// Who a request authenticated as, found once by the in-flight limiter (the first layer to
/// ask) and carried in the request's extensions to the handler, so it is not looked up twice.
#[derive(Debug, Clone)]
pub struct Authenticated(pub UserInfo);

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// The uid (a service account's), if known.
    pub uid: String,
    /// The groups, `system:authenticated` included.
    pub groups: Vec<String>,
    /// Extra attributes by key (only impersonation sets them: `Impersonate-Extra-<key>`).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The administrator (also every request of a server run without authentication).
    pub fn admin() -> Self {
        Self {
            name: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec![crate::semantics::rbac::MASTERS.into(), AUTHENTICATED.into()],
            extra: BTreeMap::new(),
        }
    }

    /// Service account `name` of `namespace`.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.into(),
            groups: vec![
                SERVICE_ACCOUNTS.into(),
                format!("{SERVICE_ACCOUNTS}:{namespace}"),
                AUTHENTICATED.into(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// The `userInfo` object reviews report (`extra` only when there is any).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v =
            serde_json::json!({"username": self.name, "uid": self.uid, "groups": self.groups});
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }

    /// User `name` in `groups` (and `system:authenticated`).
    pub fn user(name: &str, groups: &[String]) -> Self {
        let mut all: Vec<String> = groups.to_vec();
        if !all.iter().any(|g| g == AUTHENTICATED) {
            all.push(AUTHENTICATED.into());
        }
        Self {
            name: name.into(),
            uid: String::new(),
            groups: all,
            extra: BTreeMap::new(),
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Who a request speaks for, from its connection's client certificate `peer` and its
/// `headers`; 401 when neither names an accepted identity.
pub fn authenticate(
    state: &State,
    headers: &HeaderMap,
    peer: Option<&PeerChain>,
) -> Result<UserInfo, ApiError> {
    let Some(secret) = &state.token else {
        return Ok(UserInfo::admin());
    };
    if let (Some(chain), Some(certs)) = (peer, state.client_certs.get()) {
        match certs.user(&chain.0, rustls::pki_types::UnixTime::now()) {
            Ok(user) => return Ok(user),
            Err(e) => tracing::debug!(error = %e, "client certificate refused"),
        }
    }
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    token_user(state, secret, token).ok_or_else(ApiError::unauthorized)
}

/// Who `token` speaks for, if the server accepts it.
pub fn token_user(state: &State, secret: &str, token: &str) -> Option<UserInfo> {
    if constant_time_eq(token.as_bytes(), secret.as_bytes()) {
        return Some(UserInfo::admin());
    }
    if let Some(sa) = super::objects::service_account_of(state, token) {
        return Some(UserInfo::service_account(&sa.namespace, &sa.name, &sa.uid));
    }
    let claims = UserSigner::from_secret(secret.as_bytes())
        .verify(token, jiff::Timestamp::now().as_second())
        .ok()?;
    Some(UserInfo::user(&claims.name, &claims.groups))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_carry_kubernetes_groups() {
        let sa = UserInfo::service_account("ns", "bot", "u1");
        assert_eq!(sa.name, "system:serviceaccount:ns:bot");
        assert_eq!(
            sa.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
        let u = UserInfo::user("alice", &["dev".into(), AUTHENTICATED.into()]);
        assert_eq!(u.groups, ["dev", AUTHENTICATED]);
        assert!(
            UserInfo::admin()
                .groups
                .iter()
                .any(|g| g == "system:masters")
        );
    }
}
