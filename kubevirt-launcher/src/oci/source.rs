//! Where images come from: an OCI distribution registry, or a local OCI image layout.

use super::mirrors::{Endpoint, MirrorConfig};
use super::reference::{ImageRef, Reference};
use super::{OciError, io_err};
use oci_spec::image::{ANNOTATION_REF_NAME, ImageIndex};
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;

use kubevirt_oci::{Challenge, MANIFEST_TYPES, parse_challenge};

/// Something images can be read from.
pub trait ImageSource {
    /// The raw manifest (or index) of `image`.
    fn manifest(&self, image: &ImageRef) -> Result<Vec<u8>, OciError>;
    /// Copy blob `digest` of `image`'s repository into `sink`.
    fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
        sink: &mut dyn FnMut(&mut dyn Read) -> Result<(), OciError>,
    ) -> Result<(), OciError>;
}

/// An OCI distribution (Docker v2) registry. Hosts in `plain_http` are spoken to over HTTP (a
/// loopback registry); others over HTTPS, with anonymous bearer tokens when the registry asks.
/// With a mirror configuration ([`MirrorConfig`], containerd's `hosts.toml` layout) a
/// registry's mirrors are tried first, in order, then its server.
#[derive(Debug)]
pub struct Registry {
    agent: ureq::Agent,
    plain_http: Vec<String>,
    mirrors: Option<MirrorConfig>,
}

impl Registry {
    /// A client; `plain_http` lists `host:port`s without TLS.
    pub fn new(plain_http: Vec<String>) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        Self {
            agent: config.into(),
            plain_http,
            mirrors: None,
        }
    }

    /// Reads registry mirrors from containerd's `config_path` directory `dir`
    /// (`<dir>/<registry>/hosts.toml`, or `<dir>/_default/hosts.toml`).
    pub fn with_mirrors(mut self, dir: impl Into<PathBuf>) -> Self {
        self.mirrors = Some(MirrorConfig::new(dir));
        self
    }

    /// Where `image` may come from, in order: its mirrors, then its server.
    fn endpoints(&self, image: &ImageRef) -> Result<Vec<Endpoint>, OciError> {
        if let Some(m) = &self.mirrors
            && let Some(list) = m
                .endpoints(&image.registry)
                .map_err(|e| Self::err(image, format!("registry mirrors: {e}")))?
        {
            return Ok(list);
        }
        let host = if image.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &image.registry
        };
        let scheme = if self.plain_http.iter().any(|h| h == &image.registry) {
            "http"
        } else {
            "https"
        };
        Ok(vec![Endpoint {
            api: format!("{scheme}://{host}/v2"),
            resolve: true,
            pull: true,
        }])
    }

    /// GETs `kind/what` of `image` from the first endpoint that may serve it (`by_tag`: a tag
    /// resolution) and has it; the error lists every endpoint tried.
    fn fetch(
        &self,
        image: &ImageRef,
        kind: &str,
        what: &str,
        by_tag: bool,
        accept: &str,
    ) -> Result<(String, ureq::http::Response<ureq::Body>), OciError> {
        let mut failures = Vec::new();
        for e in self.endpoints(image)? {
            if (by_tag && !e.resolve) || (!by_tag && !e.pull) {
                continue;
            }
            let url = format!("{}/{}/{kind}/{what}", e.api, image.repository);
            match self.get(image, &url, accept) {
                Ok(resp) => return Ok((url, resp)),
                Err(OciError::Registry { message, .. }) => failures.push(message),
                Err(other) => return Err(other),
            }
        }
        Err(Self::err(image, failures.join("; then ")))
    }

    fn err(image: &ImageRef, message: String) -> OciError {
        OciError::Registry {
            registry: image.registry.clone(),
            message,
        }
    }

    /// GET with one retry carrying an anonymous bearer token when the registry answers 401.
    fn get(
        &self,
        image: &ImageRef,
        url: &str,
        accept: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, OciError> {
        let send = |token: Option<&str>| {
            let mut req = self.agent.get(url).header("Accept", accept);
            if let Some(t) = token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            req.call()
                .map_err(|e| Self::err(image, format!("GET {url}: {e}")))
        };
        let resp = send(None)?;
        if resp.status() != 401 {
            return Self::check(image, url, resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let token = self.token(image, &challenge)?;
        Self::check(image, url, send(Some(&token))?)
    }

    fn check(
        image: &ImageRef,
        url: &str,
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, OciError> {
        match resp.status().as_u16() {
            200 => Ok(resp),
            404 => Err(Self::err(
                image,
                format!("{url}: not found (does {image} exist?)"),
            )),
            code => Err(Self::err(image, format!("{url}: HTTP {code}"))),
        }
    }

    fn token(&self, image: &ImageRef, challenge: &str) -> Result<String, OciError> {
        let (realm, service, scope) = match parse_challenge(challenge) {
            Ok(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => (realm, service, scope),
            Ok(Challenge::Basic) => {
                return Err(Self::err(
                    image,
                    "the registry asks for credentials (Basic); the launcher pulls anonymously"
                        .into(),
                ));
            }
            Err(e) => return Err(Self::err(image, e.to_string())),
        };
        let mut req = self.agent.get(&realm);
        for (k, v) in [("service", service), ("scope", scope)] {
            if let Some(v) = v {
                req = req.query(k, &v);
            }
        }
        let resp = req
            .call()
            .map_err(|e| Self::err(image, format!("token from {realm}: {e}")))?;
        let bytes = resp
            .into_body()
            .read_to_vec()
            .map_err(|e| Self::err(image, format!("token from {realm}: {e}")))?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Self::err(image, format!("token from {realm}: {e}")))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Self::err(image, format!("{realm} returned no token")))
    }
}

impl ImageSource for Registry {
    fn manifest(&self, image: &ImageRef) -> Result<Vec<u8>, OciError> {
        let what = match &image.reference {
            Reference::Tag(t) => t.clone(),
            Reference::Digest(d) => d.clone(),
        };
        let by_tag = matches!(image.reference, Reference::Tag(_));
        let (url, resp) = self.fetch(image, "manifests", &what, by_tag, MANIFEST_TYPES)?;
        resp.into_body()
            .with_config()
            .limit(4 << 20)
            .read_to_vec()
            .map_err(|e| Self::err(image, format!("{url}: {e}")))
    }

    fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
        sink: &mut dyn FnMut(&mut dyn Read) -> Result<(), OciError>,
    ) -> Result<(), OciError> {
        let (_, resp) = self.fetch(image, "blobs", digest, false, "*/*")?;
        let mut reader = resp.into_body().into_reader();
        sink(&mut reader)
    }
}

/// A local OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>, OciError> {
        let hex = super::store::digest_hex(digest).ok_or_else(|| OciError::Manifest {
            image: self.dir.display().to_string(),
            message: format!("bad digest {digest:?}"),
        })?;
        let p = self.dir.join("blobs").join("sha256").join(hex);
        std::fs::read(&p).map_err(io_err(&p))
    }
}

impl ImageSource for Layout {
    fn manifest(&self, image: &ImageRef) -> Result<Vec<u8>, OciError> {
        let tag = match &image.reference {
            Reference::Digest(d) => return self.read_blob(d),
            Reference::Tag(t) => t,
        };
        let index_path = self.dir.join("index.json");
        let text = std::fs::read(&index_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OciError::Manifest {
                image: format!("oci:{}:{tag}", self.dir.display()),
                message: format!(
                    "{} is not an OCI image layout (no index.json); write one with `cargo run -p kubevirt-demo-guest -- {}` for the demo guest, or `skopeo copy docker://IMAGE oci:DIR:TAG`",
                    self.dir.display(),
                    self.dir.display()
                ),
            },
            _ => io_err(&index_path)(e),
        })?;
        let index: ImageIndex = serde_json::from_slice(&text).map_err(|e| OciError::Manifest {
            image: image.to_string(),
            message: format!("index.json: {e}"),
        })?;
        let manifests = index.manifests();
        let named = manifests.iter().find(|m| {
            m.annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_REF_NAME))
                == Some(tag)
        });
        let chosen = named
            .or(if manifests.len() == 1 {
                manifests.first()
            } else {
                None
            })
            .ok_or_else(|| OciError::Manifest {
                image: image.to_string(),
                message: format!("no manifest tagged {tag:?} in {}", index_path.display()),
            })?;
        let digest = chosen.digest().to_string();
        self.read_blob(&digest)
    }

    fn blob(
        &self,
        _image: &ImageRef,
        digest: &str,
        sink: &mut dyn FnMut(&mut dyn Read) -> Result<(), OciError>,
    ) -> Result<(), OciError> {
        let bytes = self.read_blob(digest)?;
        sink(&mut bytes.as_slice())
    }
}
