//! Parsing request paths into what they address.

use super::health::Probe;
use std::collections::BTreeMap;

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz`, or one check of them (`/readyz/NAME`).
    Health {
        /// Which probe.
        probe: Probe,
        /// One check by name, if the path names one.
        check: Option<String>,
    },
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    Resources {
        /// Group (empty for core).
        group: String,
        /// Version.
        version: String,
    },
    /// `/openapi/v3`.
    OpenApiIndex,
    /// `/openapi/v3/{api/v1 | apis/g/v}`.
    OpenApi {
        /// Group.
        group: String,
        /// Version.
        version: String,
    },
    /// A collection, object or subresource.
    Object(Target),
}

/// A resource path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural.
    pub plural: String,
    /// Namespace, if the path has one.
    pub namespace: Option<String>,
    /// Object name, if the path addresses one.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `log`).
    pub sub: Option<String>,
}

/// Parse a path (without query).
pub fn parse(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Some(Route::Version),
        [first @ ("healthz" | "livez" | "readyz"), rest @ ..] => Some(Route::Health {
            probe: Probe::from_segment(first)?,
            check: (!rest.is_empty()).then(|| rest.join("/")),
        }),
        ["api"] => Some(Route::CoreVersions),
        ["apis"] => Some(Route::Groups),
        ["apis", g] => Some(Route::Group(g.to_string())),
        ["api", v] => Some(Route::Resources {
            group: String::new(),
            version: v.to_string(),
        }),
        ["apis", g, v] => Some(Route::Resources {
            group: g.to_string(),
            version: v.to_string(),
        }),
        ["openapi", "v3"] => Some(Route::OpenApiIndex),
        ["openapi", "v3", "api", v] => Some(Route::OpenApi {
            group: String::new(),
            version: v.to_string(),
        }),
        ["openapi", "v3", "apis", g, v] => Some(Route::OpenApi {
            group: g.to_string(),
            version: v.to_string(),
        }),
        ["api", v, rest @ ..] => target(String::new(), v, rest).map(Route::Object),
        ["apis", g, v, rest @ ..] => target(g.to_string(), v, rest).map(Route::Object),
        _ => None,
    }
}

fn target(group: String, version: &str, rest: &[&str]) -> Option<Target> {
    let t = |plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        group: group.clone(),
        version: version.to_string(),
        plural: plural.to_string(),
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        sub: sub.map(str::to_string),
    };
    let is_core_ns = group.is_empty();
    match rest {
        // Namespaces themselves: /api/v1/namespaces[/name[/status|finalize]].
        ["namespaces"] if is_core_ns => Some(t("namespaces", None, None, None)),
        ["namespaces", name] if is_core_ns => Some(t("namespaces", None, Some(name), None)),
        ["namespaces", name, sub @ ("status" | "finalize")] if is_core_ns => {
            Some(t("namespaces", None, Some(name), Some(sub)))
        }
        ["namespaces", ns, plural] => Some(t(plural, Some(ns), None, None)),
        ["namespaces", ns, plural, name] => Some(t(plural, Some(ns), Some(name), None)),
        ["namespaces", ns, plural, name, sub] => Some(t(plural, Some(ns), Some(name), Some(sub))),
        [plural] => Some(t(plural, None, None, None)),
        [plural, name] => Some(t(plural, None, Some(name), None)),
        [plural, name, sub] => Some(t(plural, None, Some(name), Some(sub))),
        _ => None,
    }
}

/// Query parameters (empty pairs and unknown keys are accepted, as kube-rs sends `?&watch=true`).
pub fn query(q: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

/// Percent-decoding (with `+` as space, as in forms).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse("/readyz/poststarthook/kubevirt-crds"),
            Some(Route::Health {
                probe: Probe::Ready,
                check: Some("poststarthook/kubevirt-crds".into()),
            })
        );
        assert_eq!(
            parse("/livez"),
            Some(Route::Health {
                probe: Probe::Live,
                check: None,
            })
        );
        assert_eq!(
            parse("/api/v1/namespaces/default"),
            Some(Route::Object(Target {
                group: "".into(),
                version: "v1".into(),
                plural: "namespaces".into(),
                namespace: None,
                name: Some("default".into()),
                sub: None
            }))
        );
        let Some(Route::Object(t)) =
            parse("/apis/kubevirt.io/v1/namespaces/ns/virtualmachineinstancereplicasets/rs/scale")
        else {
            panic!()
        };
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref(), t.sub.as_deref()),
            (Some("ns"), Some("rs"), Some("scale"))
        );
        let Some(Route::Object(t)) = parse("/api/v1/namespaces/ns/pods") else {
            panic!()
        };
        assert_eq!((t.plural.as_str(), t.name), ("pods", None));
        assert_eq!(
            parse("/apis/kubevirt.io/v1"),
            Some(Route::Resources {
                group: "kubevirt.io".into(),
                version: "v1".into()
            })
        );
        assert_eq!(parse("/nope"), None);
    }

    #[test]
    fn decodes_queries() {
        let q = query(Some("&watch=true&labelSelector=app%3Dweb%2Ctier+in+(a)&x"));
        assert_eq!(q["watch"], "true");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["x"], "");
    }

    proptest! {
        #[test]
        fn never_panics(p in "\\PC{0,60}") {
            let _ = parse(&p);
            let _ = query(Some(&p));
        }
    }
}
