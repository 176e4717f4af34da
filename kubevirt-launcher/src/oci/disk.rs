//! From an image to the disk file inside it.

use super::reference::{ImageRef, Reference};
use super::source::ImageSource;
use super::store::{Store, digest_of};
use super::{OciError, io_err};
use oci_spec::image::{Arch, ImageIndex, ImageManifest, Os};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The parts of an image manifest the launcher uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
}

enum Parsed {
    Image(Manifest),
    /// An index: the digest of the linux/amd64 manifest.
    Index(String),
}

fn parse(image: &ImageRef, bytes: &[u8]) -> Result<Parsed, OciError> {
    let err = |m: String| OciError::Manifest {
        image: image.to_string(),
        message: m,
    };
    // An index (or Docker manifest list) names its entries under `manifests`; an image
    // manifest (OCI or Docker v2, the same shape) has `layers`.
    let is_index = serde_json::from_slice::<IndexProbe>(bytes)
        .map_err(|e| err(format!("not JSON: {e}")))?
        .manifests
        .is_some();
    if is_index {
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
        return Ok(Parsed::Index(chosen.digest().to_string()));
    }
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| err(format!("neither an image manifest nor an index: {e}")))?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    Ok(Parsed::Image(Manifest { layers }))
}

/// Just enough of a manifest to tell an index from an image manifest.
#[derive(serde::Deserialize)]
struct IndexProbe {
    manifests: Option<serde::de::IgnoredAny>,
}

/// Resolve `image` to its manifest digest and manifest, following an index to linux/amd64.
fn resolve(
    source: &dyn ImageSource,
    store: &Store,
    image: &ImageRef,
) -> Result<(String, Manifest), OciError> {
    let mut current = image.clone();
    for _ in 0..2 {
        let bytes = source.manifest(&current)?;
        let digest = digest_of(&bytes);
        if let Reference::Digest(want) = &current.reference
            && *want != digest
        {
            return Err(OciError::DigestMismatch {
                expected: want.clone(),
                actual: digest,
            });
        }
        match parse(&current, &bytes)? {
            Parsed::Image(m) => {
                store.put_tag(&image.to_string(), &digest)?;
                return Ok((digest, m));
            }
            Parsed::Index(d) => {
                current = ImageRef {
                    reference: Reference::Digest(d),
                    ..image.clone()
                }
            }
        }
    }
    Err(OciError::Manifest {
        image: image.to_string(),
        message: "an index points at another index".into(),
    })
}

/// The disk image of `image`, pulled, verified, cached and extracted once; `path` is the
/// containerDisk's `path` (default: the one file under `/disk/`). If the source cannot be reached,
/// a disk extracted for the same tag before is used. Any single file (a kernel, an initrd) is
/// extracted the same way, by its `path`.
pub fn fetch_disk(
    source: &dyn ImageSource,
    store: &Store,
    image: &ImageRef,
    path: Option<&str>,
) -> Result<PathBuf, OciError> {
    let (digest, manifest) = match resolve(source, store, image) {
        Ok(r) => r,
        Err(e @ OciError::Registry { .. }) => {
            let cached = store
                .tag(&image.to_string())
                .and_then(|d| store.disk_path(&d, path))
                .filter(|p| p.exists());
            return cached.ok_or(e);
        }
        Err(e) => return Err(e),
    };
    let out = store
        .disk_path(&digest, path)
        .ok_or_else(|| OciError::Manifest {
            image: image.to_string(),
            message: format!("bad digest {digest}"),
        })?;
    if out.exists() {
        return Ok(out);
    }
    let mut found: Option<PathBuf> = None;
    for layer in &manifest.layers {
        let blob = match store.blob(layer) {
            Some(p) => p,
            None => {
                let mut stored = None;
                source.blob(image, layer, &mut |r: &mut dyn Read| {
                    stored = Some(store.put_blob(layer, r)?);
                    Ok(())
                })?;
                stored.ok_or_else(|| OciError::Manifest {
                    image: image.to_string(),
                    message: format!("layer {layer} was empty"),
                })?
            }
        };
        if let Some(p) = extract_from_layer(&blob, path, &out)? {
            found = Some(p);
        }
    }
    let disk = found.ok_or_else(|| OciError::NoDisk(image.to_string()))?;
    let mut perms = fs::metadata(&disk).map_err(io_err(&disk))?.permissions();
    perms.set_readonly(true);
    fs::set_permissions(&disk, perms).map_err(io_err(&disk))?;
    Ok(disk)
}

/// Copy the disk file out of one layer (plain or gzip tar) to `out`, if the layer has it.
fn extract_from_layer(
    blob: &Path,
    wanted: Option<&str>,
    out: &Path,
) -> Result<Option<PathBuf>, OciError> {
    let mut file = fs::File::open(blob).map_err(io_err(blob))?;
    let mut magic = [0u8; 2];
    let gz = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = fs::File::open(blob).map_err(io_err(blob))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let wanted = wanted.map(|w| w.trim_start_matches('/').to_string());
    let mut result = None;
    for entry in archive.entries().map_err(io_err(blob))? {
        let mut entry = entry.map_err(io_err(blob))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(io_err(blob))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let hit = match &wanted {
            Some(w) => name == *w,
            None => name.starts_with("disk/") && !name["disk/".len()..].contains('/'),
        };
        if !hit {
            continue;
        }
        if let Some(dir) = out.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let tmp = out.with_extension(format!("partial-{}", std::process::id()));
        let mut dst = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        std::io::copy(&mut entry, &mut dst).map_err(io_err(&tmp))?;
        dst.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, out).map_err(io_err(out))?;
        result = Some(out.to_path_buf());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageRef {
        "registry.example/demo/disk:v1".parse().unwrap()
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn an_index_resolves_to_its_linux_amd64_entry() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
            {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D1}","size":10,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{D2}","size":10,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        match parse(&image(), index.as_bytes()).unwrap() {
            Parsed::Index(d) => assert_eq!(d, D2),
            Parsed::Image(_) => panic!("an index parsed as an image"),
        }
        let arm_only = index.replace("amd64", "s390x");
        let err = parse(&image(), arm_only.as_bytes()).err().unwrap();
        assert!(err.to_string().contains("no linux/amd64 image"), "{err}");
    }

    #[test]
    fn a_docker_v2_manifest_lists_its_layers_bottom_first() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":5}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D1}","size":7}},
                      {{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":8}}]}}"#
        );
        match parse(&image(), manifest.as_bytes()).unwrap() {
            Parsed::Image(m) => assert_eq!(m.layers, vec![D1.to_string(), D2.to_string()]),
            Parsed::Index(_) => panic!("an image parsed as an index"),
        }
    }

    #[test]
    fn what_is_neither_is_refused_with_the_image_named() {
        for bad in [&b"not json"[..], br#"{"schemaVersion":2}"#] {
            let err = parse(&image(), bad).err().unwrap().to_string();
            assert!(err.contains("registry.example/demo/disk:v1"), "{err}");
        }
    }
}
