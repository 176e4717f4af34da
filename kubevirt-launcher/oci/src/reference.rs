//! Image references: `registry:5000/kubevirt/cirros:devel`, `quay.io/containerdisks/fedora@sha256:…`,
//! `fedora` (= `docker.io/library/fedora:latest`).

use std::fmt;
use std::str::FromStr;

/// An image reference that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference {reference:?} is not valid: {reason}")]
pub struct ReferenceError {
    /// The text given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A tag such as `latest`.
    Tag(String),
    /// A content digest such as `sha256:…`.
    Digest(String),
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (and port).
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag or digest.
    pub reference: Reference,
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        let bad = |reason| ReferenceError {
            reference: s.to_string(),
            reason,
        };
        let s = s.trim().strip_prefix("docker://").unwrap_or(s.trim());
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad("empty or contains spaces"));
        }
        let (name, reference) = match s.split_once('@') {
            Some((n, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("a sha256 digest has 64 hex digits"));
                }
                (n, Reference::Digest(d.to_ascii_lowercase()))
            }
            None => {
                let slash = s.rfind('/').map_or(0, |i| i + 1);
                match s[slash..].rfind(':') {
                    Some(i) => (
                        &s[..slash + i],
                        Reference::Tag(s[slash + i + 1..].to_string()),
                    ),
                    None => (s, Reference::Tag("latest".into())),
                }
            }
        };
        if let Reference::Tag(t) = &reference {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad("a tag is 1-128 letters, digits, '_', '.' or '-'"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            Some(_) => ("docker.io".to_string(), name.to_string()),
            None => ("docker.io".to_string(), format!("library/{name}")),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)
                    })
            });
        if !repo_ok {
            return Err(bad(
                "repository components are lower-case letters, digits, '_', '.' or '-'",
            ));
        }
        Ok(Self {
            registry,
            repository,
            reference,
        })
    }
}

impl ImageRef {
    /// The tag or digest, as the registry's `manifests/<reference>` path names it.
    pub fn manifest_reference(&self) -> &str {
        match &self.reference {
            Reference::Tag(t) | Reference::Digest(t) => t,
        }
    }

    /// The same repository at `digest` (an index's entry).
    pub fn at_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            reference: Reference::Digest(digest.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}/{}:{t}", self.registry, self.repository),
            Reference::Digest(d) => write!(f, "{}/{}@{d}", self.registry, self.repository),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_usual_forms() {
        let r: ImageRef = "registry:5000/kubevirt/cirros-container-disk-demo:devel"
            .parse()
            .unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("registry:5000", "kubevirt/cirros-container-disk-demo")
        );
        assert_eq!(r.reference, Reference::Tag("devel".into()));
        let r: ImageRef = "fedora".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/fedora:latest");
        let d = format!("quay.io/containerdisks/fedora@sha256:{}", "a".repeat(64));
        assert!(matches!(
            d.parse::<ImageRef>().unwrap().reference,
            Reference::Digest(_)
        ));
        for bad in ["", "a b", "Upper/Case", "x@sha256:abc", "x:", "reg.io//x"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_displays_what_it_parsed(s in "\\PC{0,60}") {
            if let Ok(r) = s.parse::<ImageRef>() {
                prop_assert_eq!(r.to_string().parse::<ImageRef>().unwrap(), r);
            }
        }
    }
}
