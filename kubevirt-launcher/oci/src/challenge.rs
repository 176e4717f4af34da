//! A registry's `WWW-Authenticate` challenge (RFC 7235, as the distribution spec's token flow
//! uses it): `Bearer realm="https://auth/token",service="registry",scope="repository:r:pull"`
//! says where to get a token; `Basic realm="..."` asks for the credentials themselves.

use std::collections::BTreeMap;

/// How the registry wants to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` (with `service` and `scope` as query parameters), basic
    /// credentials if any, and send it as `Authorization: Bearer`.
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The `service` parameter, if given.
        service: Option<String>,
        /// The `scope` parameter, if given.
        scope: Option<String>,
    },
    /// Send the credentials with every request (`Authorization: Basic`).
    Basic,
}

/// A challenge this client cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the registry's authentication challenge {header:?} cannot be answered: {reason}")]
pub struct ChallengeError {
    /// The header's value.
    pub header: String,
    /// Why.
    pub reason: &'static str,
}

/// Parses a `WWW-Authenticate` value.
///
/// # Errors
/// [`ChallengeError`] for another scheme, a Bearer challenge without a realm, or bad syntax.
pub fn parse_challenge(header: &str) -> Result<Challenge, ChallengeError> {
    let bad = |reason| ChallengeError {
        header: header.to_string(),
        reason,
    };
    let text = header.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(bad("only the Bearer and Basic schemes are supported"));
    }
    let params = parse_params(rest).ok_or_else(|| bad("its parameters do not parse"))?;
    let realm = params
        .get("realm")
        .filter(|r| r.starts_with("http://") || r.starts_with("https://"))
        .ok_or_else(|| bad("a Bearer challenge needs an http(s) realm"))?;
    Ok(Challenge::Bearer {
        realm: realm.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `k=v, k="quoted, with \"escapes\""` → map (keys lower-cased).
fn parse_params(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if c.is_whitespace() || c == ',' || c == '"' {
                return None;
            }
            key.push(c);
            chars.next();
        }
        chars.next()?; // '='
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if key.is_empty() {
            return None;
        }
        out.insert(key.to_ascii_lowercase(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dockers_and_quays_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#).unwrap(),
            Challenge::Basic
        );
        let c = parse_challenge("bearer realm=http://127.0.0.1:5/t").unwrap();
        assert!(matches!(c, Challenge::Bearer { service: None, .. }));
        for bad in [
            "Digest realm=\"x\"",
            "Bearer service=\"x\"",
            "Bearer realm=\"ftp://x\"",
            "Bearer realm=\"https://x",
        ] {
            assert!(parse_challenge(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_challenge(&s);
        }

        #[test]
        fn quoted_values_round_trip(realm in "https://[a-z]{1,10}/[a-z,:]{0,10}", scope in "[a-z/:,\" ]{0,20}") {
            let quoted = scope.replace('\\', "\\\\").replace('"', "\\\"");
            let h = format!("Bearer realm=\"{realm}\", scope=\"{quoted}\"");
            prop_assert_eq!(
                parse_challenge(&h).unwrap(),
                Challenge::Bearer { realm, service: None, scope: Some(scope) }
            );
        }
    }
}
