//! User tokens: what `kubevirt-local kubeconfig --user NAME --group G` hands out. A JWT (HS256)
//! naming the user and groups, signed with a key derived from the server's own secret (the
//! data directory's `token` file) under a label of its own, so a service-account token is never
//! taken for a user token nor the other way round. Like a client certificate signed by the
//! cluster's CA, it carries its identity itself: the server stores nothing per user, it keeps
//! working across restarts (the secret persists), and replacing the secret revokes every one.

use serde_json::{Value, json};

use super::jwt::Hs256;
use super::token::TokenError;

/// The issuer claim of user tokens.
pub const USER_ISSUER: &str = "kubevirt-local";

/// The identity a user token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserClaims {
    /// The user name (`sub`).
    pub name: String,
    /// The groups it was issued with (`groups`).
    pub groups: Vec<String>,
}

/// Why a user name or group cannot be put in a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Empty user name.
    #[error("the user name must not be empty")]
    EmptyUser,
    /// A `system:serviceaccount:` user: those identities come from service-account tokens.
    #[error("{0:?} is a service account's name: use `kubectl create token` for service accounts")]
    ServiceAccount(String),
    /// An empty group.
    #[error("a group name must not be empty")]
    EmptyGroup,
}

/// Signs and verifies user tokens with one key.
#[derive(Clone, Debug)]
pub struct UserSigner(Hs256);

impl UserClaims {
    /// Claims for `name` in `groups`, checked.
    pub fn new(name: &str, groups: &[String]) -> Result<Self, ClaimError> {
        if name.is_empty() {
            return Err(ClaimError::EmptyUser);
        }
        if name.starts_with("system:serviceaccount:") {
            return Err(ClaimError::ServiceAccount(name.to_string()));
        }
        if groups.iter().any(String::is_empty) {
            return Err(ClaimError::EmptyGroup);
        }
        Ok(Self {
            name: name.to_string(),
            groups: groups.to_vec(),
        })
    }
}

impl UserSigner {
    /// A signer keyed from `secret` (the server's bearer token).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(Hs256::derived(b"kubevirt-local user tokens", secret))
    }

    /// A token for `user`, valid from `now` (Unix seconds) for `seconds`.
    pub fn issue(&self, user: &UserClaims, now: i64, seconds: i64) -> String {
        self.0.sign(
            &json!({"iss": USER_ISSUER, "sub": user.name, "groups": user.groups,
            "iat": now, "nbf": now, "exp": now.saturating_add(seconds)}),
        )
    }

    /// Verify `token` at `now`; the identity it carries.
    pub fn verify(&self, token: &str, now: i64) -> Result<UserClaims, TokenError> {
        let claims = self.0.verify(token, now)?;
        if claims["iss"] != USER_ISSUER {
            return Err(TokenError::Malformed);
        }
        let name = claims["sub"].as_str().ok_or(TokenError::Malformed)?;
        let groups: Vec<String> = match &claims["groups"] {
            Value::Array(list) => list
                .iter()
                .map(|g| g.as_str().map(str::to_string).ok_or(TokenError::Malformed))
                .collect::<Result<_, _>>()?,
            Value::Null => Vec::new(),
            _ => return Err(TokenError::Malformed),
        };
        UserClaims::new(name, &groups).map_err(|_| TokenError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_user_token_verifies_until_it_expires_and_only_under_its_key() {
        let s = UserSigner::from_secret(b"secret");
        let alice = UserClaims::new("alice", &["team-a".into()]).unwrap();
        let t = s.issue(&alice, 1000, 60);
        assert_eq!(s.verify(&t, 1000), Ok(alice.clone()));
        assert_eq!(s.verify(&t, 1060), Err(TokenError::Expired));
        assert_eq!(
            UserSigner::from_secret(b"other").verify(&t, 1000),
            Err(TokenError::Signature)
        );
        // A service-account token made from the same secret is not a user token.
        let sa = super::super::token::Signer::from_secret(b"secret").issue(
            &super::super::token::ServiceAccountRef {
                namespace: "ns".into(),
                name: "bot".into(),
                uid: "u".into(),
            },
            &[super::super::token::ISSUER.to_string()],
            1000,
            60,
        );
        assert_eq!(s.verify(&sa, 1000), Err(TokenError::Signature));
    }

    #[test]
    fn service_account_names_and_empty_names_are_refused() {
        assert_eq!(UserClaims::new("", &[]), Err(ClaimError::EmptyUser));
        assert!(matches!(
            UserClaims::new("system:serviceaccount:a:b", &[]),
            Err(ClaimError::ServiceAccount(_))
        ));
        assert_eq!(
            UserClaims::new("u", &[String::new()]),
            Err(ClaimError::EmptyGroup)
        );
    }

    proptest! {
        #[test]
        fn any_identity_round_trips(name in "[a-zA-Z0-9:@._ \\-\"\\\\]{1,40}",
                                    groups in proptest::collection::vec("\\PC{1,20}", 0..5)) {
            prop_assume!(!name.starts_with("system:serviceaccount:"));
            let s = UserSigner::from_secret(b"k");
            let user = UserClaims::new(&name, &groups).unwrap();
            prop_assert_eq!(s.verify(&s.issue(&user, 5, 10), 6), Ok(user));
        }

        #[test]
        fn garbage_is_refused_without_panicking(t in "\\PC{0,120}") {
            prop_assert!(UserSigner::from_secret(b"k").verify(&t, 0).is_err());
        }

        #[test]
        fn altered_tokens_never_verify(flip in 0usize..200, bit in 0u8..6) {
            let s = UserSigner::from_secret(b"k");
            let t = s.issue(&UserClaims::new("u", &["g".into()]).unwrap(), 0, 100);
            let mut bytes = t.into_bytes();
            let i = flip % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(altered) = String::from_utf8(bytes) {
                // Either refused, or a base64 encoding of the very same bytes (trailing bits).
                if let Ok(u) = s.verify(&altered, 1) {
                    prop_assert_eq!(u, UserClaims::new("u", &["g".into()]).unwrap());
                }
            }
        }
    }
}
