//! A container image in a registry as a source (a DataVolume's `source.registry`, upstream's
//! `IMPORTER_SOURCE=registry`): `docker://host/repo:tag` or `@sha256:…`; the manifest (an index
//! followed to linux/amd64), then each layer bottom first, every blob checked against its
//! digest, and the file under `disk/` copied out of the layers (later layers override earlier
//! ones, whiteouts honoured: [`kubevirt_oci::layers`]) to scratch space, as upstream copies it
//! out first too. The pipeline then reads that file like any local image (qcow2 is converted,
//! backing files refused, sizes checked).
//!
//! HTTP is the `http` source's ([`super::http`]: the `certConfigMap`'s CAs, the cluster's
//! proxy). Authentication follows the distribution spec: anonymous first; on a 401 with
//! `WWW-Authenticate: Bearer realm=…` a token is fetched from the realm (with the `secretRef`'s
//! `accessKeyId`/`secretKey` as basic credentials when given), on `Basic` the credentials are
//! sent themselves. With `INSECURE_TLS` (the registry is in CDIConfig's `insecureRegistries`)
//! the certificate is not verified and a registry that does not speak TLS is spoken to over
//! plain HTTP, as upstream's containers/image does for insecure registries.

use super::http::{HttpError, HttpOptions, HttpSource};
use super::proxy::ProxyConfig;
use super::{Source, SourceError, Stream};
use hyper::StatusCode;
use kubevirt_oci::{
    Challenge, DiskFinder, ImageRef, MANIFEST_TYPES, Parsed, Reference, parse_challenge,
};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registry user name and password (`secretRef`'s `accessKeyId`/`secretKey`).
    pub credentials: Option<(String, String)>,
    /// Directories of CA certificates to trust besides the system's (`certConfigMap`).
    pub cert_dirs: Vec<PathBuf>,
    /// An insecure registry: no certificate verification, plain HTTP if it has no TLS.
    pub insecure: bool,
    /// The cluster's proxies.
    pub proxy: ProxyConfig,
    /// Where the disk is copied out of the layers.
    pub scratch_dir: PathBuf,
}

/// Failures of a registry source.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The URL is not `docker://` with a valid image reference.
    #[error("the registry URL {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The image (or one of its blobs) does not exist.
    #[error(
        "image {image} not found in the registry ({what} answered 404 Not Found); check the DataVolume's source.registry.url"
    )]
    NotFound {
        /// The image.
        image: String,
        /// What was asked for.
        what: String,
    },
    /// The registry refused the credentials (or wants some).
    #[error(
        "the registry refused access to {image} (HTTP {status}); if it needs credentials, give the DataVolume a secretRef whose accessKeyId and secretKey are the registry's user name and password"
    )]
    Unauthorized {
        /// The image.
        image: String,
        /// The status.
        status: u16,
    },
    /// A challenge or token answer that cannot be used.
    #[error("authenticating to the registry for {image}: {message}")]
    Authentication {
        /// The image.
        image: String,
        /// What went wrong.
        message: String,
    },
    /// The manifest is unusable.
    #[error("the manifest of {image}: {message}")]
    Manifest {
        /// The image.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// A manifest's content does not match the digest it was asked for by.
    #[error(transparent)]
    Digest(#[from] kubevirt_oci::DigestMismatch),
    /// A layer could not be read or does not match its digest.
    #[error("layer {digest} of {image}: {source}")]
    Layer {
        /// The image.
        image: String,
        /// The layer.
        digest: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// No disk in the image.
    #[error(
        "image {0} has no disk: CDI imports the single file under /disk/ of the image (a containerDisk)"
    )]
    NoDisk(String),
    /// HTTP failed.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// The credentials sent with each request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Auth {
    Anonymous,
    Basic,
    Bearer(String),
}

/// A registry image.
#[derive(Debug)]
pub struct RegistrySource {
    url: String,
    image: ImageRef,
    options: RegistryOptions,
    auth: Auth,
    scheme: &'static str,
    pulled: Option<PulledDisk>,
}

/// The disk copied out of the layers, removed when the source is dropped.
#[derive(Debug)]
struct PulledDisk(PathBuf);

impl Drop for PulledDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl RegistrySource {
    /// `url` (`docker://…`) with `options`; the URL is checked now.
    pub fn new(url: &str, options: RegistryOptions) -> Result<Self, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let rest = url.trim().strip_prefix("docker://").ok_or_else(|| {
            invalid(
                "it must start with docker:// (oci-archive and imageStream are not supported)"
                    .into(),
            )
        })?;
        let image: ImageRef = rest
            .parse()
            .map_err(|e: kubevirt_oci::ReferenceError| invalid(e.reason.to_string()))?;
        Ok(Self {
            url: url.trim().to_string(),
            image,
            options,
            auth: Auth::Anonymous,
            scheme: "https",
            pulled: None,
        })
    }

    /// The image.
    pub fn image(&self) -> &ImageRef {
        &self.image
    }

    fn host(&self) -> &str {
        if self.image.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.image.registry
        }
    }

    fn http_options(&self, accept: &str) -> HttpOptions {
        let mut options = HttpOptions {
            cert_dirs: self.options.cert_dirs.clone(),
            insecure_skip_verify: self.options.insecure,
            proxy: self.options.proxy.clone(),
            extra_headers: vec![("Accept".into(), accept.into())],
            ..HttpOptions::default()
        };
        match &self.auth {
            Auth::Anonymous => {}
            Auth::Basic => options.basic_auth = self.options.credentials.clone(),
            Auth::Bearer(token) => options
                .extra_headers
                .push(("Authorization".into(), format!("Bearer {token}"))),
        }
        options
    }

    /// GETs `<repo>/<path>` (`manifests/…`, `blobs/…`), authenticating when asked to.
    fn get(&mut self, path: &str, accept: &str) -> Result<Stream, RegistryError> {
        let mut authenticated = false;
        let mut fell_back = false;
        loop {
            let url = format!(
                "{}://{}/v2/{}/{path}",
                self.scheme,
                self.host(),
                self.image.repository
            );
            let result = HttpSource::new(&url, self.http_options(accept))
                .map_err(RegistryError::Http)?
                .open();
            let error = match result {
                Ok(stream) => return Ok(stream),
                Err(SourceError::Http(e)) => e,
                Err(other) => {
                    return Err(RegistryError::Http(HttpError::Runtime(
                        std::io::Error::other(other.to_string()),
                    )));
                }
            };
            match error {
                HttpError::Connect { .. }
                    if self.options.insecure && self.scheme == "https" && !fell_back =>
                {
                    tracing::info!(registry = %self.image.registry, "no TLS: an insecure registry, trying plain HTTP");
                    self.scheme = "http";
                    fell_back = true;
                }
                HttpError::Status {
                    status: StatusCode::UNAUTHORIZED,
                    challenge,
                    ..
                } if !authenticated => {
                    self.authenticate(challenge.as_deref().unwrap_or(""))?;
                    authenticated = true;
                }
                HttpError::Status { status, .. }
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
                {
                    return Err(RegistryError::Unauthorized {
                        image: self.image.to_string(),
                        status: status.as_u16(),
                    });
                }
                HttpError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                } => {
                    return Err(RegistryError::NotFound {
                        image: self.image.to_string(),
                        what: path.to_string(),
                    });
                }
                other => return Err(RegistryError::Http(other)),
            }
        }
    }

    /// Answers a 401's challenge: a token from its realm, or basic credentials.
    fn authenticate(&mut self, header: &str) -> Result<(), RegistryError> {
        let auth_err = |message: String| RegistryError::Authentication {
            image: self.image.to_string(),
            message,
        };
        let unauthorized = || RegistryError::Unauthorized {
            image: self.image.to_string(),
            status: 401,
        };
        match parse_challenge(header).map_err(|e| auth_err(e.to_string()))? {
            Challenge::Basic => {
                if self.options.credentials.is_none() {
                    return Err(unauthorized());
                }
                self.auth = Auth::Basic;
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut query = Vec::new();
                for (k, v) in [("service", service), ("scope", scope)] {
                    if let Some(v) = v {
                        query.push(format!("{k}={}", query_escape(&v)));
                    }
                }
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = if query.is_empty() {
                    realm.clone()
                } else {
                    format!("{realm}{sep}{}", query.join("&"))
                };
                let options = HttpOptions {
                    cert_dirs: self.options.cert_dirs.clone(),
                    insecure_skip_verify: self.options.insecure,
                    proxy: self.options.proxy.clone(),
                    basic_auth: self.options.credentials.clone(),
                    ..HttpOptions::default()
                };
                let stream = match HttpSource::new(&url, options)?.open() {
                    Ok(s) => s,
                    Err(SourceError::Http(HttpError::Status { status, .. }))
                        if status == StatusCode::UNAUTHORIZED
                            || status == StatusCode::FORBIDDEN =>
                    {
                        return Err(unauthorized());
                    }
                    Err(SourceError::Http(e)) => return Err(e.into()),
                    Err(e) => return Err(auth_err(e.to_string())),
                };
                let body = read_limited(stream.reader, 1 << 20)
                    .map_err(|e| auth_err(format!("reading the token from {realm}: {e}")))?;
                let answer: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| auth_err(format!("the token from {realm} is not JSON: {e}")))?;
                let token = answer
                    .get("token")
                    .or_else(|| answer.get("access_token"))
                    .and_then(serde_json::Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| auth_err(format!("{realm} answered without a token")))?;
                self.auth = Auth::Bearer(token.to_string());
            }
        }
        Ok(())
    }

    /// The image's manifest, an index followed to its linux/amd64 entry.
    fn manifest(&mut self) -> Result<kubevirt_oci::Manifest, RegistryError> {
        let mut current = self.image.clone();
        for _ in 0..2 {
            let stream = self.get(
                &format!("manifests/{}", current.manifest_reference()),
                MANIFEST_TYPES,
            )?;
            let bytes = read_limited(stream.reader, kubevirt_oci::manifest::MAX_MANIFEST_BYTES)
                .map_err(|e| RegistryError::Manifest {
                    image: current.to_string(),
                    message: e.to_string(),
                })?;
            if let Reference::Digest(want) = &current.reference {
                let actual = kubevirt_oci::digest_of(&bytes);
                if *want != actual {
                    return Err(kubevirt_oci::DigestMismatch {
                        expected: want.clone(),
                        actual,
                    }
                    .into());
                }
            }
            match kubevirt_oci::manifest::parse(&bytes) {
                Ok(Parsed::Image(m)) => return Ok(m),
                Ok(Parsed::Index(d)) => current = self.image.at_digest(&d),
                Err(e) => {
                    return Err(RegistryError::Manifest {
                        image: current.to_string(),
                        message: e.0,
                    });
                }
            }
        }
        Err(RegistryError::Manifest {
            image: self.image.to_string(),
            message: "an index points at another index".into(),
        })
    }

    /// Pulls the image and copies its disk to scratch space.
    fn pull(&mut self) -> Result<PathBuf, RegistryError> {
        let manifest = self.manifest()?;
        let out = self
            .options
            .scratch_dir
            .join(crate::cdi::import::target::REGISTRY_DISK_NAME);
        let guard = PulledDisk(out.clone());
        let mut finder = DiskFinder::new(None, &out);
        let image = self.image.to_string();
        for digest in &manifest.layers {
            let layer_err = |source| RegistryError::Layer {
                image: image.clone(),
                digest: digest.clone(),
                source,
            };
            if kubevirt_oci::digest_hex(digest).is_none() {
                return Err(layer_err(std::io::Error::other(
                    "not a sha256 digest; only sha256 is supported",
                )));
            }
            let stream = self.get(&format!("blobs/{digest}"), "*/*")?;
            let mut hashed = kubevirt_oci::DigestReader::new(stream.reader, digest);
            finder
                .layer(&mut hashed)
                .map_err(|e| layer_err(std::io::Error::other(e)))?;
            hashed.finish().map_err(layer_err)?;
        }
        tracing::info!(image = %self.image, disk = ?finder.found(), layers = manifest.layers.len(), "pulled");
        let path = finder
            .finish()
            .ok_or_else(|| RegistryError::NoDisk(self.image.to_string()))?;
        self.pulled = Some(guard);
        Ok(path)
    }
}

/// Reads at most `limit` bytes; more is an error.
fn read_limited(reader: Box<dyn Read>, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("longer than {limit} bytes")));
    }
    Ok(bytes)
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Source for RegistrySource {
    fn open(&mut self) -> Result<Stream, SourceError> {
        let path = match &self.pulled {
            Some(p) => p.0.clone(),
            None => self.pull()?,
        };
        let err = |source| SourceError::File {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(&path).map_err(err)?;
        let length = file.metadata().map_err(err)?.len();
        Ok(Stream {
            reader: Box::new(file),
            length: Some(length),
        })
    }

    fn local_path(&self) -> Option<&Path> {
        self.pulled.as_ref().map(|p| p.0.as_path())
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests;
