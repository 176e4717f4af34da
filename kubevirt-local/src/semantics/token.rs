//! Service account tokens: JWTs signed by the API server (HS256, keyed from the server's own
//! secret), with the claims upstream's TokenRequest issues (`iss`, `sub`
//! `system:serviceaccount:NS:NAME`, `aud`, `exp`, `iat`, `nbf` and the `kubernetes.io` claim
//! naming the namespace and service account with its uid).

use serde_json::{Value, json};

use super::jwt::Hs256;

/// The issuer, and the audience the API server itself accepts (upstream's default).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Why a token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with JSON header and claims.
    #[error("not a JWT")]
    Malformed,
    /// The signature does not verify (another key, or altered).
    #[error("the signature does not verify")]
    Signature,
    /// Past `exp` (or before `nbf`).
    #[error("the token has expired or is not valid yet")]
    Expired,
    /// The audience does not include what the verifier accepts.
    #[error("the token is not for audience {0}")]
    Audience(String),
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid when the token was issued.
    pub uid: String,
}

/// Signs and verifies tokens with one key.
#[derive(Clone, Debug)]
pub struct Signer(Hs256);

impl Signer {
    /// A signer keyed from `secret` (the server's bearer token: a new one invalidates every
    /// service account token, as rotating upstream's signing key does).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(Hs256::derived(
            b"kubevirt-local service account tokens",
            secret,
        ))
    }

    /// A token for `sa` valid from `now` (Unix seconds) for `seconds`, for `audiences`.
    pub fn issue(
        &self,
        sa: &ServiceAccountRef,
        audiences: &[String],
        now: i64,
        seconds: i64,
    ) -> String {
        self.0.sign(&json!({
            "iss": ISSUER, "aud": audiences, "sub": format!("system:serviceaccount:{}:{}", sa.namespace, sa.name),
            "iat": now, "nbf": now, "exp": now + seconds,
            "kubernetes.io": {"namespace": sa.namespace, "serviceaccount": {"name": sa.name, "uid": sa.uid}},
        }))
    }

    /// Verify `token` at `now` for `audience`; who it speaks for.
    pub fn verify(
        &self,
        token: &str,
        audience: &str,
        now: i64,
    ) -> Result<ServiceAccountRef, TokenError> {
        let claims = self.0.verify(token, now)?;
        let aud_ok = match &claims["aud"] {
            Value::String(a) => a == audience,
            Value::Array(list) => list.iter().any(|a| a == audience),
            _ => false,
        };
        if !aud_ok {
            return Err(TokenError::Audience(audience.to_string()));
        }
        let k = &claims["kubernetes.io"];
        let text = |v: &Value| v.as_str().map(str::to_string).ok_or(TokenError::Malformed);
        Ok(ServiceAccountRef {
            namespace: text(&k["namespace"])?,
            name: text(&k["serviceaccount"]["name"])?,
            uid: text(&k["serviceaccount"]["uid"])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use proptest::prelude::*;

    fn sa() -> ServiceAccountRef {
        ServiceAccountRef {
            namespace: "ns".into(),
            name: "default".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn a_token_verifies_until_it_expires_and_only_for_its_audience() {
        let s = Signer::from_secret(b"secret");
        let t = s.issue(&sa(), &[ISSUER.to_string()], 1000, 600);
        assert_eq!(s.verify(&t, ISSUER, 1000), Ok(sa()));
        assert_eq!(s.verify(&t, ISSUER, 1600), Err(TokenError::Expired));
        assert_eq!(
            s.verify(&t, "vault", 1000),
            Err(TokenError::Audience("vault".into()))
        );
        assert_eq!(
            Signer::from_secret(b"other").verify(&t, ISSUER, 1000),
            Err(TokenError::Signature)
        );
        // Altered claims do not verify.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(r#"{"exp":99999999999,"aud":"x"}"#);
        parts[1] = &forged;
        assert_eq!(
            s.verify(&parts.join("."), ISSUER, 1000),
            Err(TokenError::Signature)
        );
    }

    proptest! {
        #[test]
        fn garbage_is_refused_without_panicking(t in "\\PC{0,80}") {
            prop_assert!(Signer::from_secret(b"k").verify(&t, ISSUER, 0).is_err());
        }
    }
}
