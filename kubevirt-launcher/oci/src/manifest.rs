//! Image manifests and indexes (OCI and Docker schema 2, the same shapes): an index is followed
//! to its linux/amd64 entry, a manifest gives its layers bottom first.

use oci_spec::image::{Arch, ImageIndex, ImageManifest, Os};

/// The media types to ask a registry for when fetching a manifest (`Accept`).
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest read (registries cap them at 4 MiB too).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// The parts of an image manifest a disk needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
}

/// What a manifest document is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An image manifest.
    Image(Manifest),
    /// An index (or Docker manifest list): the digest of its linux/amd64 manifest.
    Index(String),
}

/// A manifest that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// Just enough of a manifest to tell an index from an image manifest.
#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u64>,
    manifests: Option<serde::de::IgnoredAny>,
}

/// Parses a manifest or index.
///
/// # Errors
/// [`ManifestError`] saying what is wrong (not JSON, schema 1, no linux/amd64 entry, ...).
pub fn parse(bytes: &[u8]) -> Result<Parsed, ManifestError> {
    let err = |m: String| ManifestError(m);
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| err(format!("not JSON: {e}")))?;
    if probe.schema_version == Some(1) {
        return Err(err(
            "Docker schema 1 manifests are not supported; push the image again with a current client".into(),
        ));
    }
    if probe.manifests.is_some() {
        let index: ImageIndex =
            serde_json::from_slice(bytes).map_err(|e| err(format!("index: {e}")))?;
        let list = index.manifests();
        let amd64 = list.iter().find(|m| {
            m.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
        });
        let chosen = amd64
            .or(if list.len() == 1 { list.first() } else { None })
            .ok_or_else(|| err("the index has no linux/amd64 image".into()))?;
        return Ok(Parsed::Index(sha256(
            chosen.digest().to_string(),
            "the index's entry",
        )?));
    }
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("neither an image manifest nor an index: {e}")))?;
    let layers = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| sha256(l.digest().to_string(), &format!("layer {i}")))
        .collect::<Result<_, _>>()?;
    Ok(Parsed::Image(Manifest { layers }))
}

/// `digest` if it is a `sha256:` digest, the only kind blobs are stored and verified by (OCI
/// allows others, e.g. `sha512:`; a registry that serves them is refused by name here rather
/// than failing later as a corrupt download).
fn sha256(digest: String, what: &str) -> Result<String, ManifestError> {
    match crate::digest_hex(&digest) {
        Some(_) => Ok(digest),
        None => Err(ManifestError(format!(
            "{what} has the digest {digest:?}: only sha256 digests are supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn digests_other_than_sha256_are_refused_by_name() {
        let other = format!("sha512:{}", "a".repeat(128));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":5}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D1}","size":7}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{other}","size":8}}]}}"#
        );
        let err = parse(manifest.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("layer 1") && err.contains("only sha256"),
            "{err}"
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha255:{}","size":1}}]}}"#,
            "b".repeat(64)
        );
        let err = parse(index.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("index's entry") && err.contains("only sha256"),
            "{err}"
        );
    }

    #[test]
    fn an_index_resolves_to_its_linux_amd64_entry() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
            {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D1}","size":10,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D2}","size":10,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        assert_eq!(parse(index.as_bytes()).unwrap(), Parsed::Index(D2.into()));
        let arm_only = index.replace("amd64", "s390x");
        let err = parse(arm_only.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no linux/amd64 image"), "{err}");
        // An OCI index with a single entry without a platform: that one.
        let single = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":10}}]}}"#
        );
        assert_eq!(parse(single.as_bytes()).unwrap(), Parsed::Index(D1.into()));
    }

    #[test]
    fn docker_v2_and_oci_manifests_list_their_layers_bottom_first() {
        for (mt, lt) in [
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        ] {
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}",
                "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":5}},
                "layers":[{{"mediaType":"{lt}","digest":"{D1}","size":7}},
                          {{"mediaType":"{lt}","digest":"{D2}","size":8}}]}}"#
            );
            assert_eq!(
                parse(manifest.as_bytes()).unwrap(),
                Parsed::Image(Manifest {
                    layers: vec![D1.to_string(), D2.to_string()]
                })
            );
        }
    }

    #[test]
    fn what_is_neither_is_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"schemaVersion":2}"#,
            br#"{"schemaVersion":1,"fsLayers":[]}"#,
        ] {
            assert!(parse(bad).is_err());
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_err(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn any_json_shape_parses_or_err(s in r#"\{"(schemaVersion|manifests|layers|config)":(\[\]|2|\{\}|"x")\}"#) {
            let _ = parse(s.as_bytes());
        }
    }
}
