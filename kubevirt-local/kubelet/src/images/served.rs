//! What the node's registry serves: repositories whose tags point into OCI image layouts on this
//! host (the node's own images, and any layout named with `--image NAME:TAG=DIR`). Only reading:
//! a manifest is found by tag (the layout's `index.json`) or digest, a blob by digest, each only
//! in the layouts of the repository asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::local::{BuiltImage, MANIFEST_MEDIA_TYPE, REF_NAME};

/// Errors naming an image to serve.
#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    /// `--image` is not `NAME:TAG=DIR`.
    #[error(
        "--image {0:?} is not NAME:TAG=DIR (e.g. kubevirt-rs/demo:1=target/demo-image): NAME is a lowercase repository path, TAG up to 128 of [A-Za-z0-9_.-]"
    )]
    Spec(String),
    /// The layout could not be read.
    #[error("--image {name}:{tag}: {path}: {message}")]
    Layout {
        /// The repository.
        name: String,
        /// The tag.
        tag: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A manifest (or index) descriptor: what a tag resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Its media type (the `Content-Type` it is served with).
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One image to serve: `name:tag` from the layout in `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedImage {
    /// The repository (`kubevirt-rs/demo`).
    pub name: String,
    /// The tag.
    pub tag: String,
    /// The OCI image layout.
    pub dir: PathBuf,
}

/// Whether `name` is a repository name as the distribution spec allows:
/// `[a-z0-9]+([._-][a-z0-9]+)*` components separated by `/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|component| {
            !component.is_empty()
                && component.split(['.', '_', '-']).all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        })
}

/// Whether `tag` is a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `digest` is `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase): safe as a file name.
pub fn valid_digest(digest: &str) -> bool {
    let hex_ok = |h: &str, n: usize| {
        h.len() == n
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match digest.split_once(':') {
        Some(("sha256", h)) => hex_ok(h, 64),
        Some(("sha512", h)) => hex_ok(h, 128),
        _ => false,
    }
}

impl ServedImage {
    /// Parses `NAME:TAG=DIR` (`kubevirt-rs/demo:1=target/demo-image`).
    pub fn parse(spec: &str) -> Result<Self, ServedError> {
        let bad = || ServedError::Spec(spec.to_string());
        let (reference, dir) = spec.split_once('=').ok_or_else(bad)?;
        let (name, tag) = reference.rsplit_once(':').ok_or_else(bad)?;
        if !valid_name(name) || !valid_tag(tag) || dir.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            name: name.to_string(),
            tag: tag.to_string(),
            dir: PathBuf::from(dir),
        })
    }
}

impl From<&BuiltImage> for ServedImage {
    fn from(b: &BuiltImage) -> Self {
        Self {
            name: b.name.clone(),
            tag: b.tag.clone(),
            dir: b.dir.clone(),
        }
    }
}

/// The manifest `tag` names in the layout at `dir`: the `index.json` entry annotated with that
/// tag (`org.opencontainers.image.ref.name`, bare or as `…:tag`), else the only entry.
pub fn resolve_tag(dir: &Path, tag: &str) -> Result<Descriptor, String> {
    let path = dir.join("index.json");
    let text = std::fs::read(&path).map_err(|e| {
        format!(
            "{e} (not an OCI image layout; write one with `skopeo copy docker://IMAGE oci:DIR:TAG`)"
        )
    })?;
    let index: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}"))?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or("has no \"manifests\" list")?;
    let named = |m: &&serde_json::Value| {
        m["annotations"][REF_NAME]
            .as_str()
            .is_some_and(|r| r == tag || r.ends_with(&format!(":{tag}")))
    };
    let entry = match manifests.iter().find(named) {
        Some(m) => m,
        None if manifests.len() == 1 => &manifests[0],
        None => {
            let tags: Vec<&str> = manifests
                .iter()
                .filter_map(|m| m["annotations"][REF_NAME].as_str())
                .collect();
            return Err(format!("no manifest tagged {tag:?} (tags: {tags:?})"));
        }
    };
    let digest = entry["digest"].as_str().unwrap_or_default().to_string();
    if !valid_digest(&digest) {
        return Err(format!("manifest digest {digest:?} is not sha256:<hex>"));
    }
    let (alg, hex) = digest.split_once(':').unwrap_or_default();
    if !dir.join("blobs").join(alg).join(hex).is_file() {
        return Err(format!("the manifest blob {digest} is missing"));
    }
    Ok(Descriptor {
        media_type: entry["mediaType"]
            .as_str()
            .unwrap_or(MANIFEST_MEDIA_TYPE)
            .to_string(),
        digest,
        size: entry["size"].as_u64().unwrap_or(0),
    })
}

#[derive(Debug, Clone, Default)]
struct Repository {
    /// Tag → manifest.
    tags: BTreeMap<String, Descriptor>,
    /// The layouts blobs are looked for in.
    dirs: Vec<PathBuf>,
}

/// Everything the registry serves, by repository.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    repositories: BTreeMap<String, Repository>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `image` (its tag resolved now: a layout missing or without that tag is an error
    /// naming it).
    pub fn add(&mut self, image: &ServedImage) -> Result<(), ServedError> {
        let descriptor =
            resolve_tag(&image.dir, &image.tag).map_err(|message| ServedError::Layout {
                name: image.name.clone(),
                tag: image.tag.clone(),
                path: image.dir.clone(),
                message,
            })?;
        let repo = self.repositories.entry(image.name.clone()).or_default();
        repo.tags.insert(image.tag.clone(), descriptor);
        if !repo.dirs.contains(&image.dir) {
            repo.dirs.push(image.dir.clone());
        }
        Ok(())
    }

    /// Whether `name` is served.
    pub fn has(&self, name: &str) -> bool {
        self.repositories.contains_key(name)
    }

    /// The manifest a tag names.
    pub fn tag(&self, name: &str, tag: &str) -> Option<&Descriptor> {
        self.repositories.get(name)?.tags.get(tag)
    }

    /// The file of blob `digest` in `name`'s layouts (manifests are blobs too).
    pub fn blob(&self, name: &str, digest: &str) -> Option<PathBuf> {
        if !valid_digest(digest) {
            return None;
        }
        let (alg, hex) = digest.split_once(':')?;
        self.repositories
            .get(name)?
            .dirs
            .iter()
            .map(|d| d.join("blobs").join(alg).join(hex))
            .find(|p| p.is_file())
    }

    /// The media type a manifest blob `digest` of `name` is served with: as a tag's descriptor
    /// says, else its own `mediaType` field, else an OCI image manifest.
    pub fn manifest_media_type(&self, name: &str, digest: &str, body: &[u8]) -> String {
        let by_tag = self
            .repositories
            .get(name)
            .and_then(|r| r.tags.values().find(|d| d.digest == digest));
        if let Some(d) = by_tag {
            return d.media_type.clone();
        }
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| MANIFEST_MEDIA_TYPE.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::LocalImage;

    #[test]
    fn image_specs_are_parsed() {
        let s = ServedImage::parse("kubevirt-rs/demo:1=target/demo-image").unwrap();
        assert_eq!(
            (s.name.as_str(), s.tag.as_str(), s.dir.as_path()),
            ("kubevirt-rs/demo", "1", Path::new("target/demo-image"))
        );
        assert!(ServedImage::parse("a/b:v1.2_x=/abs/dir=with=eq").is_ok());
        for bad in [
            "demo=dir",
            "demo:1",
            "Demo:1=dir",
            "demo:1=",
            "demo:-x=dir",
            "a//b:1=dir",
            "a/b-:1=dir",
            ":1=dir",
        ] {
            assert!(ServedImage::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_are_checked() {
        assert!(valid_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!valid_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!valid_digest("sha256:../../etc/passwd"));
        assert!(!valid_digest("md5:abc"));
    }

    #[test]
    fn tags_resolve_in_layouts() {
        let dir = std::env::temp_dir().join(format!("kubelet-served-{}", std::process::id()));
        let built = LocalImage::new("t/x", "7")
            .file("/a", "b", 0o644)
            .unwrap()
            .write_layout(&dir)
            .unwrap();
        let mut catalog = Catalog::new();
        catalog.add(&ServedImage::from(&built)).unwrap();
        let d = catalog.tag("t/x", "7").unwrap();
        assert_eq!(d.digest, built.digest);
        assert_eq!(d.media_type, MANIFEST_MEDIA_TYPE);
        assert!(catalog.blob("t/x", &built.digest).is_some());
        assert!(catalog.blob("t/y", &built.digest).is_none());
        // The only manifest answers any tag asked for by --image.
        catalog
            .add(&ServedImage {
                name: "t/z".into(),
                tag: "other".into(),
                dir: dir.clone(),
            })
            .unwrap();
        let err = catalog
            .add(&ServedImage {
                name: "t/z".into(),
                tag: "1".into(),
                dir: dir.join("nope"),
            })
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(spec in ".{0,80}") {
            let _ = ServedImage::parse(&spec);
            let _ = valid_digest(&spec);
        }
    }
}
