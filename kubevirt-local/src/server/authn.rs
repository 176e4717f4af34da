//! Authentication: every request's bearer token mapped to a user (name, uid, groups), as
//! kube-apiserver's token authenticators do. Three kinds of token are accepted:
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
use axum::http::{HeaderMap, header};

/// The administrator's user name (the data directory's token).
pub const ADMIN_USER: &str = "kubevirt-local-admin";
/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of every service account.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// The uid (a service account's), if known.
    pub uid: String,
    /// The groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The administrator (also every request of a server run without authentication).
    pub fn admin() -> Self {
        Self {
            name: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec![crate::semantics::rbac::MASTERS.into(), AUTHENTICATED.into()],
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
        }
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

/// Who `headers` speak for; 401 when no accepted token is present.
pub fn authenticate(state: &State, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let Some(secret) = &state.token else {
        return Ok(UserInfo::admin());
    };
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
