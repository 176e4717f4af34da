//! Registry mirrors as containerd configures them (its `config_path`, usually
//! `/etc/containerd/certs.d`): a directory per registry host (`docker.io`, `quay.io`,
//! `registry:5000`, or `_default` for every registry) holding a `hosts.toml`:
//!
//! ```toml
//! server = "https://quay.io"
//!
//! [host."http://127.0.0.1:5000"]
//!   capabilities = ["pull", "resolve"]
//! ```
//!
//! Mirrors are tried in the order listed, then the server (by default the registry itself).
//! A mirror resolves tags only with the `resolve` capability and serves blobs and manifests by
//! digest only with `pull` (containerd's default is both). A host URL without a path gets `/v2`
//! appended; one with `override_path = true` is used as given. The launcher reads only these
//! keys (TLS and header settings are not supported and refused with the line named).

use std::path::{Path, PathBuf};

/// One place to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL of the v2 API (`http://127.0.0.1:5000/v2`), no trailing slash.
    pub api: String,
    /// May resolve tags to manifests.
    pub resolve: bool,
    /// May serve content by digest.
    pub pull: bool,
}

/// Why a `hosts.toml` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct MirrorConfigError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses one `hosts.toml` for registry `registry`: mirrors in order, then the server.
///
/// # Errors
/// [`MirrorConfigError`] naming the line that is not understood.
pub fn parse_hosts_toml(
    file: &str,
    text: &str,
    registry: &str,
) -> Result<Vec<Endpoint>, MirrorConfigError> {
    let err = |line: usize, message: String| MirrorConfigError {
        file: file.into(),
        line,
        message,
    };
    let mut server: Option<String> = None;
    // (url, capabilities, override_path)
    let mut hosts: Vec<(String, Option<Vec<String>>, bool)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let inner = header
                .strip_suffix(']')
                .ok_or_else(|| err(n, "a table header must end with ]".into()))?
                .trim();
            let url = inner
                .strip_prefix("host.")
                .map(str::trim)
                .and_then(|q| q.strip_prefix('"'))
                .and_then(|q| q.strip_suffix('"'))
                .ok_or_else(|| err(n, format!("table [{inner}] is not [host.\"URL\"]")))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(err(
                    n,
                    format!("host {url:?} must start with http:// or https://"),
                ));
            }
            hosts.push((url.to_string(), None, false));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| err(n, format!("{line:?} is not key = value")))?;
        match (key, hosts.last_mut()) {
            ("server", None) => {
                server =
                    Some(string(value).ok_or_else(|| err(n, "server must be a string".into()))?)
            }
            ("capabilities", Some(h)) => {
                h.1 = Some(
                    string_list(value)
                        .ok_or_else(|| err(n, "capabilities must be a list of strings".into()))?,
                );
            }
            ("override_path", Some(h)) => {
                h.2 = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(err(n, "override_path must be true or false".into())),
                };
            }
            // TLS verification off is harmless for the plain-HTTP mirrors this is for.
            ("skip_verify", Some(_)) => {}
            (other, _) => {
                return Err(err(
                    n,
                    format!("{other:?} is not supported by kubevirt-launcher here"),
                ));
            }
        }
    }
    let mut out: Vec<Endpoint> = hosts
        .into_iter()
        .map(|(url, caps, override_path)| {
            let caps = caps.unwrap_or_else(|| vec!["pull".into(), "resolve".into()]);
            Endpoint {
                api: api_base(&url, override_path),
                resolve: caps.iter().any(|c| c == "resolve"),
                pull: caps.iter().any(|c| c == "pull"),
            }
        })
        .collect();
    let server = server.unwrap_or_else(|| default_server(registry));
    out.push(Endpoint {
        api: api_base(&server, false),
        resolve: true,
        pull: true,
    });
    Ok(out)
}

fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn string(v: &str) -> Option<String> {
    let s = v.strip_prefix('"')?.strip_suffix('"')?;
    (!s.contains('"')).then(|| s.to_string())
}

fn string_list(v: &str) -> Option<Vec<String>> {
    let inner = v.strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(string)
        .collect()
}

fn api_base(url: &str, override_path: bool) -> String {
    let url = url.trim_end_matches('/');
    let has_path = url
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if override_path || has_path && url.ends_with("/v2") {
        url.to_string()
    } else {
        format!("{url}/v2")
    }
}

fn default_server(registry: &str) -> String {
    match registry {
        "docker.io" => "https://registry-1.docker.io".into(),
        r => format!("https://{r}"),
    }
}

/// A containerd `config_path` directory.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    dir: PathBuf,
}

impl MirrorConfig {
    /// The configuration under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MirrorConfig { dir: dir.into() }
    }

    /// Where to fetch `registry`'s images from, in order; `None` when no `hosts.toml` names
    /// it (nor `_default`).
    ///
    /// # Errors
    /// [`MirrorConfigError`] for a `hosts.toml` that cannot be read or parsed.
    pub fn endpoints(&self, registry: &str) -> Result<Option<Vec<Endpoint>>, MirrorConfigError> {
        for name in [registry, "_default"] {
            let file = self.dir.join(name).join("hosts.toml");
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    return parse_hosts_toml(&file.display().to_string(), &text, registry)
                        .map(Some);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(MirrorConfigError {
                        file: file.display().to_string(),
                        line: 0,
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(None)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mirrors_come_first_then_the_server() {
        let text = r#"
server = "https://quay.io"   # upstream

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]

[host."https://mirror.example/v2/quay"]
  capabilities = ["pull"]
  override_path = true
"#;
        let e = parse_hosts_toml("hosts.toml", text, "quay.io").unwrap();
        assert_eq!(
            e,
            [
                Endpoint {
                    api: "http://127.0.0.1:5000/v2".into(),
                    resolve: true,
                    pull: true
                },
                Endpoint {
                    api: "https://mirror.example/v2/quay".into(),
                    resolve: false,
                    pull: true
                },
                Endpoint {
                    api: "https://quay.io/v2".into(),
                    resolve: true,
                    pull: true
                },
            ]
        );
    }

    #[test]
    fn no_server_means_the_registry_itself_and_unknown_keys_are_named() {
        let e = parse_hosts_toml("h", "[host.\"http://m:1\"]\n", "docker.io").unwrap();
        assert_eq!(e[1].api, "https://registry-1.docker.io/v2");
        assert!(
            e[0].resolve && e[0].pull,
            "containerd's default capabilities"
        );
        let err =
            parse_hosts_toml("h", "[host.\"http://m:1\"]\nca = \"x.pem\"\n", "r").unwrap_err();
        assert_eq!((err.line, err.message.contains("\"ca\"")), (2, true));
        let err = parse_hosts_toml("h", "[plugins]\n", "r").unwrap_err();
        assert_eq!(err.line, 1);
    }

    proptest! {
        /// Whatever the file says, parsing returns endpoints ending with the server, or an
        /// error naming a line of the file; it never panics.
        #[test]
        fn any_text_parses_or_names_a_line(text in "(\\PC{0,40}\n){0,8}") {
            match parse_hosts_toml("h", &text, "reg") {
                Ok(e) => prop_assert!(e.last().is_some_and(|s| s.resolve && s.pull)),
                Err(err) => prop_assert!(err.line >= 1 && err.line <= text.lines().count()),
            }
        }
    }
}
