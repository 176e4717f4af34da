//! Upstream's importer environment, so the DataVolume controller renders the `importer-<dv>` pod
//! as CDI does:
//!
//! | variable | meaning |
//! |---|---|
//! | `IMPORTER_SOURCE` | `http`, `registry`, `none` (a blank disk; `blank` accepted too), `file` (ours: a local path) |
//! | `IMPORTER_ENDPOINT` | the URL (`docker://…` for a registry) or path |
//! | `IMPORTER_CONTENTTYPE` | `kubevirt` (default) or `archive` |
//! | `IMPORTER_IMAGE_SIZE` | the claim's size, a quantity (`10Gi`) |
//! | `FILESYSTEM_OVERHEAD` | the share kept for the filesystem (`0.055` if unset) |
//! | `PREALLOCATION` | `true` to allocate every block |
//! | `IMPORTER_ACCESS_KEY_ID`, `IMPORTER_SECRET_KEY` | basic authentication (the `secretRef`; a registry's user name and password) |
//! | `IMPORTER_CERT_DIR` | a directory of CA certificates (the `certConfigMap`) |
//! | `IMPORTER_PROXY_CERT_DIR` | the cluster proxy's CA bundle directory |
//! | `IMPORTER_EXTRA_HEADER_<n>` | `Name: value`, one header each (`extraHeaders`) |
//! | `IMPORTER_CHECKSUM` | the DataVolume's `checksum`, `algorithm:hex` |
//! | `INSECURE_TLS` | `true`: do not verify the server's certificate (`insecureSkipVerify`; for a registry: it is in CDIConfig's `insecureRegistries`, plain HTTP allowed) |
//! | `http_proxy`, `https_proxy`, `no_proxy` | the cluster's `importProxy` (upper case too) |
//! | `OWNER_UID` | the label of the progress metric |
//! | `IMPORTER_DONE_FILE` | a file created once the import succeeded |
//! | `IMPORTER_READY_FILE` | a file to wait for before reading the source (a node-pull import's server is listening) |
//!
//! `secretExtraHeaders` are files mounted under `/extraheaders` ([`read_secret_headers`]).
//! Upstream's other sources (`s3`, `gcs`, `imageio`, `vddk`) are refused by name.

use super::checksum::Checksum;
use super::pipeline::ContentType;
use super::source::proxy::ProxyConfig;
use super::target::DEFAULT_FILESYSTEM_OVERHEAD;
use kubevirt_api::quantity::Quantity;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The variables' names.
pub mod vars {
    /// The source kind.
    pub const SOURCE: &str = "IMPORTER_SOURCE";
    /// The URL or path.
    pub const ENDPOINT: &str = "IMPORTER_ENDPOINT";
    /// `kubevirt` or `archive`.
    pub const CONTENT_TYPE: &str = "IMPORTER_CONTENTTYPE";
    /// The claim's size, a quantity.
    pub const IMAGE_SIZE: &str = "IMPORTER_IMAGE_SIZE";
    /// The filesystem overhead, a fraction.
    pub const FILESYSTEM_OVERHEAD: &str = "FILESYSTEM_OVERHEAD";
    /// Allocate every block.
    pub const PREALLOCATION: &str = "PREALLOCATION";
    /// The basic-auth user (the secretRef's `accessKeyId`).
    pub const ACCESS_KEY_ID: &str = "IMPORTER_ACCESS_KEY_ID";
    /// The basic-auth password (the secretRef's `secretKey`).
    pub const SECRET_KEY: &str = "IMPORTER_SECRET_KEY";
    /// The certConfigMap's mount.
    pub const CERT_DIR: &str = "IMPORTER_CERT_DIR";
    /// The proxy CA bundle's mount.
    pub const PROXY_CERT_DIR: &str = "IMPORTER_PROXY_CERT_DIR";
    /// The expected digest, `algorithm:hex`.
    pub const CHECKSUM: &str = "IMPORTER_CHECKSUM";
    /// Skip verifying the server's certificate.
    pub const INSECURE_TLS: &str = "INSECURE_TLS";
    /// The progress metric's label.
    pub const OWNER_UID: &str = "OWNER_UID";
    /// Created on success.
    pub const DONE_FILE: &str = "IMPORTER_DONE_FILE";
    /// Waited for before the source is read.
    pub const READY_FILE: &str = "IMPORTER_READY_FILE";
}

/// The variables' prefix for extra headers.
pub const EXTRA_HEADER_PREFIX: &str = "IMPORTER_EXTRA_HEADER_";

/// Where the data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `http`: the endpoint is an http(s) URL.
    Http,
    /// `registry`: the endpoint is a `docker://` image reference.
    Registry,
    /// `none`: a blank disk.
    Blank,
    /// `file`: the endpoint is a local path.
    File,
}

/// The parsed environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ImporterEnv {
    /// The source kind.
    pub source: SourceKind,
    /// The URL or path (empty for a blank disk).
    pub endpoint: String,
    /// What the data is.
    pub content_type: ContentType,
    /// The claim's size in bytes.
    pub image_size: Option<u64>,
    /// The filesystem overhead, a fraction.
    pub filesystem_overhead: f64,
    /// Allocate every block.
    pub preallocation: bool,
    /// Basic authentication.
    pub basic_auth: Option<(String, String)>,
    /// CA certificate directories.
    pub cert_dirs: Vec<PathBuf>,
    /// Extra headers, in the order of their variables' names.
    pub extra_headers: Vec<(String, String)>,
    /// The source's expected digest.
    pub checksum: Option<Checksum>,
    /// Skip verifying the server's certificate.
    pub insecure_tls: bool,
    /// The proxies.
    pub proxy: ProxyConfig,
    /// The progress metric's label.
    pub owner_uid: String,
    /// Created on success.
    pub done_file: Option<PathBuf>,
    /// Waited for before the source is read.
    pub ready_file: Option<PathBuf>,
}

/// A variable that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvError {
    /// `IMPORTER_SOURCE` names a source this importer does not have.
    #[error("Unknown data source: {0:?} (this importer takes http, registry, none, file)")]
    UnknownSource(String),
    /// A source of upstream's not built yet.
    #[error("the {0} data source is not supported by this importer yet")]
    NotYetSupported(String),
    /// No endpoint for a source that needs one.
    #[error("endpoint \"IMPORTER_ENDPOINT\" is missing or blank")]
    MissingEndpoint,
    /// A variable's value is malformed.
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(var: &str, value: &str, reason: impl Into<String>) -> EnvError {
    EnvError::Invalid {
        var: var.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl ImporterEnv {
    /// Parses the variables (as `std::env::vars()` gives them; unrelated ones are ignored).
    pub fn parse(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, EnvError> {
        let mut map = std::collections::BTreeMap::new();
        for (k, v) in vars {
            map.insert(k, v);
        }
        let get = |k: &str| map.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let source = match get(vars::SOURCE).unwrap_or("http") {
            "http" => SourceKind::Http,
            "none" | "blank" => SourceKind::Blank,
            "file" => SourceKind::File,
            "registry" => SourceKind::Registry,
            s @ ("s3" | "gcs" | "imageio" | "vddk" | "upload") => {
                return Err(EnvError::NotYetSupported(s.to_string()));
            }
            other => return Err(EnvError::UnknownSource(other.to_string())),
        };
        let endpoint = get(vars::ENDPOINT).unwrap_or_default().to_string();
        if endpoint.is_empty() && source != SourceKind::Blank {
            return Err(EnvError::MissingEndpoint);
        }
        let content_type = match get(vars::CONTENT_TYPE) {
            None | Some("kubevirt") => ContentType::Kubevirt,
            Some("archive") => ContentType::Archive,
            Some(other) => {
                return Err(invalid(
                    vars::CONTENT_TYPE,
                    other,
                    "expected kubevirt or archive",
                ));
            }
        };
        let image_size = get(vars::IMAGE_SIZE)
            .map(|v| {
                Quantity::parse(v)
                    .and_then(|q| q.to_bytes())
                    .map_err(|e| invalid(vars::IMAGE_SIZE, v, e.to_string()))
            })
            .transpose()?;
        let filesystem_overhead = match get(vars::FILESYSTEM_OVERHEAD) {
            None => DEFAULT_FILESYSTEM_OVERHEAD,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|f| (0.0..1.0).contains(f))
                .ok_or_else(|| {
                    invalid(
                        vars::FILESYSTEM_OVERHEAD,
                        v,
                        "expected a fraction in [0, 1)",
                    )
                })?,
        };
        let preallocation = match get(vars::PREALLOCATION) {
            None => false,
            Some(v) => parse_bool(v)
                .ok_or_else(|| invalid(vars::PREALLOCATION, v, "expected true or false"))?,
        };
        let checksum = get(vars::CHECKSUM)
            .map(|v| Checksum::parse(v).map_err(|e| invalid(vars::CHECKSUM, v, e.to_string())))
            .transpose()?;
        let insecure_tls = match get(vars::INSECURE_TLS) {
            None => false,
            Some(v) => parse_bool(v)
                .ok_or_else(|| invalid(vars::INSECURE_TLS, v, "expected true or false"))?,
        };
        let proxy = ProxyConfig::from_vars(|k| map.get(k).cloned())
            .map_err(|e| invalid("http_proxy/https_proxy", "", e.to_string()))?;
        let basic_auth = match (get(vars::ACCESS_KEY_ID), get(vars::SECRET_KEY)) {
            (Some(user), Some(password)) => Some((user.to_string(), password.to_string())),
            _ => None,
        };
        let cert_dirs = [vars::CERT_DIR, vars::PROXY_CERT_DIR]
            .iter()
            .filter_map(|k| get(k))
            .map(PathBuf::from)
            .collect();
        let mut extra_headers = Vec::new();
        for (k, v) in map.range(EXTRA_HEADER_PREFIX.to_string()..) {
            if !k.starts_with(EXTRA_HEADER_PREFIX) {
                break;
            }
            extra_headers
                .push(parse_header(v).ok_or_else(|| invalid(k, v, "expected \"Name: value\""))?);
        }
        Ok(ImporterEnv {
            source,
            endpoint,
            content_type,
            image_size,
            filesystem_overhead,
            preallocation,
            basic_auth,
            cert_dirs,
            extra_headers,
            checksum,
            insecure_tls,
            proxy,
            owner_uid: get(vars::OWNER_UID).unwrap_or_default().to_string(),
            done_file: get(vars::DONE_FILE).map(PathBuf::from),
            ready_file: get(vars::READY_FILE).map(PathBuf::from),
        })
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `Name: value` → (`Name`, `value`); `None` without a colon or with an empty or non-token
/// name.
pub fn parse_header(text: &str) -> Option<(String, String)> {
    let (name, value) = text.split_once(':')?;
    let name = name.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return None;
    }
    Some((name.to_string(), value.trim().to_string()))
}

/// The headers in the files below `dir` (one `Name: value` per file, as upstream mounts each
/// `secretExtraHeaders` secret's `secretHeader` key); names starting with `.` (a secret
/// volume's `..data`) are skipped, a missing `dir` is no headers.
pub fn read_secret_headers(dir: &Path) -> Result<Vec<(String, String)>, EnvError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    let mut headers = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let shown = file.display().to_string();
        headers.push(
            parse_header(text.trim())
                .ok_or_else(|| invalid(&shown, "(secret)", "expected \"Name: value\""))?,
        );
    }
    Ok(headers)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => collect_files(&path, out),
            Ok(m) if m.is_file() => out.push(path),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn upstreams_http_environment() {
        let env = ImporterEnv::parse(vars(&[
            ("IMPORTER_SOURCE", "http"),
            ("IMPORTER_ENDPOINT", "https://h/disk.qcow2"),
            ("IMPORTER_CONTENTTYPE", "kubevirt"),
            ("IMPORTER_IMAGE_SIZE", "1Gi"),
            ("FILESYSTEM_OVERHEAD", "0.1"),
            ("PREALLOCATION", "false"),
            ("IMPORTER_ACCESS_KEY_ID", "user"),
            ("IMPORTER_SECRET_KEY", "pw"),
            ("IMPORTER_CERT_DIR", "/certs"),
            ("IMPORTER_EXTRA_HEADER_1", "X-B: 2"),
            ("IMPORTER_EXTRA_HEADER_0", "X-A:1"),
            ("OWNER_UID", "abc"),
            ("IMPORTER_CHECKSUM", "md5:900150983cd24fb0d6963f7d28e17f72"),
            ("INSECURE_TLS", "true"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(env.source, SourceKind::Http);
        assert_eq!(env.image_size, Some(1 << 30));
        assert_eq!(env.filesystem_overhead, 0.1);
        assert_eq!(env.basic_auth, Some(("user".into(), "pw".into())));
        assert_eq!(env.cert_dirs, vec![PathBuf::from("/certs")]);
        assert_eq!(
            env.extra_headers,
            vec![("X-A".into(), "1".into()), ("X-B".into(), "2".into())]
        );
        assert_eq!(env.owner_uid, "abc");
        assert!(env.insecure_tls);
        assert_eq!(
            env.checksum.unwrap().hex,
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn defaults_and_refusals() {
        let env = ImporterEnv::parse(vars(&[
            ("IMPORTER_SOURCE", "none"),
            ("IMPORTER_IMAGE_SIZE", "64Mi"),
        ]))
        .unwrap();
        assert_eq!(
            (env.source, env.content_type),
            (SourceKind::Blank, ContentType::Kubevirt)
        );
        assert_eq!(env.filesystem_overhead, DEFAULT_FILESYSTEM_OVERHEAD);
        assert_eq!(
            ImporterEnv::parse(vars(&[])).unwrap_err(),
            EnvError::MissingEndpoint
        );
        let e = ImporterEnv::parse(vars(&[("IMPORTER_SOURCE", "s3")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the s3 data source is not supported by this importer yet"
        );
        let e = ImporterEnv::parse(vars(&[("IMPORTER_SOURCE", "registry")])).unwrap_err();
        assert_eq!(e, EnvError::MissingEndpoint);
        let env = ImporterEnv::parse(vars(&[
            ("IMPORTER_SOURCE", "registry"),
            ("IMPORTER_ENDPOINT", "docker://127.0.0.1:5000/disks/demo:v1"),
            ("INSECURE_TLS", "true"),
        ]))
        .unwrap();
        assert_eq!((env.source, env.insecure_tls), (SourceKind::Registry, true));
        let e = ImporterEnv::parse(vars(&[("IMPORTER_SOURCE", "ftp")])).unwrap_err();
        assert!(e.to_string().starts_with("Unknown data source"));
        let e = ImporterEnv::parse(vars(&[
            ("IMPORTER_SOURCE", "none"),
            ("IMPORTER_IMAGE_SIZE", "lots"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().starts_with("IMPORTER_IMAGE_SIZE=\"lots\""),
            "{e}"
        );
        let e = ImporterEnv::parse(vars(&[
            ("IMPORTER_SOURCE", "none"),
            ("FILESYSTEM_OVERHEAD", "1.5"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("fraction"), "{e}");
        let e = ImporterEnv::parse(vars(&[
            ("IMPORTER_SOURCE", "none"),
            ("IMPORTER_CHECKSUM", "sha256:x"),
        ]))
        .unwrap_err();
        assert!(
            e.to_string().starts_with("IMPORTER_CHECKSUM=\"sha256:x\""),
            "{e}"
        );
    }

    #[test]
    fn secret_headers_are_read_from_files() {
        let dir = kubevirt_testsupport::tempdir("hdr");
        std::fs::create_dir_all(dir.join("s1/..data")).unwrap();
        std::fs::write(dir.join("s1/secretHeader"), "Authorization: Bearer t\n").unwrap();
        std::fs::write(dir.join("s1/..data/secretHeader"), "Ignored: x").unwrap();
        assert_eq!(
            read_secret_headers(&dir).unwrap(),
            vec![("Authorization".into(), "Bearer t".into())]
        );
        assert_eq!(read_secret_headers(&dir.join("missing")).unwrap(), vec![]);
    }

    proptest! {
        #[test]
        fn header_parsing_never_panics(text in ".*") {
            if let Some((name, value)) = parse_header(&text) {
                prop_assert!(!name.is_empty());
                prop_assert_eq!(value.trim(), value.as_str());
            }
        }

        #[test]
        fn a_valid_header_always_parses(name in "[A-Za-z0-9-]{1,20}", value in "[ -~]{0,40}") {
            let parsed = parse_header(&format!("{name}: {value}"));
            prop_assert_eq!(parsed, Some((name, value.trim().to_string())));
        }

        #[test]
        fn any_environment_parses_or_errs(
            pairs in proptest::collection::vec(("IMPORTER_[A-Z_]{0,12}|FILESYSTEM_OVERHEAD|PREALLOCATION", ".{0,20}"), 0..8),
        ) {
            let _ = ImporterEnv::parse(pairs);
        }
    }
}
