//! The JWT mechanics both kinds of token share (service-account tokens in [`super::token`],
//! user tokens in [`super::user_token`]): HS256 with a key derived from the server's secret
//! under a label of each kind's own, so a token of one kind never verifies as the other.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde_json::{Value, json};

use super::token::TokenError;

/// An HS256 key.
#[derive(Clone)]
pub struct Hs256(hmac::Key);

impl std::fmt::Debug for Hs256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hs256(..)")
    }
}

impl Hs256 {
    /// The key for tokens labelled `label`, derived from the server's `secret`.
    pub fn derived(label: &[u8], secret: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &[label, b"\0", secret].concat());
        Self(hmac::Key::new(hmac::HMAC_SHA256, digest.as_ref()))
    }

    /// A signed token carrying `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = hmac::sign(&self.0, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// The claims of `token` if it is a JWT this key signed (HS256) that is valid at `now`
    /// (Unix seconds: before `exp`, not before `nbf`).
    pub fn verify(&self, token: &str, now: i64) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.0, format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let decode = |part: &str| -> Result<Value, TokenError> {
            let bytes = B64.decode(part).map_err(|_| TokenError::Malformed)?;
            serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
        };
        if decode(h)?["alg"] != "HS256" {
            return Err(TokenError::Malformed);
        }
        let claims = decode(c)?;
        let (exp, nbf) = (claims["exp"].as_i64(), claims["nbf"].as_i64().unwrap_or(0));
        if exp.is_none_or(|e| now >= e) || now < nbf {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}
