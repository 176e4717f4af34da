//! From an image to the disk file inside it (manifests and layers read by [`kubevirt_oci`]).

use super::reference::{ImageRef, Reference};
use super::source::ImageSource;
use super::store::{Store, digest_of};
use super::{OciError, io_err};
use kubevirt_oci::{DiskFinder, Parsed};
use std::fs;
use std::path::PathBuf;

pub use kubevirt_oci::Manifest;

fn parse(image: &ImageRef, bytes: &[u8]) -> Result<Parsed, OciError> {
    kubevirt_oci::manifest::parse(bytes).map_err(|e| OciError::Manifest {
        image: image.to_string(),
        message: e.0,
    })
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
    // Assembled beside its final name, renamed only once every layer is read (a whiteout in a
    // later layer may still remove it).
    let assembling = out.with_extension(format!("assembling-{}", std::process::id()));
    let mut finder = DiskFinder::new(path, &assembling);
    for layer in &manifest.layers {
        let blob = match store.blob(layer) {
            Some(p) => p,
            None => {
                let mut stored = None;
                source.blob(image, layer, &mut |r: &mut dyn std::io::Read| {
                    stored = Some(store.put_blob(layer, r)?);
                    Ok(())
                })?;
                stored.ok_or_else(|| OciError::Manifest {
                    image: image.to_string(),
                    message: format!("layer {layer} was empty"),
                })?
            }
        };
        let mut file = fs::File::open(&blob).map_err(io_err(&blob))?;
        finder.layer(&mut file).map_err(|e| OciError::Io {
            path: blob.display().to_string(),
            source: std::io::Error::other(e),
        })?;
    }
    let found = match finder.finish() {
        Some(assembled) => {
            fs::rename(&assembled, &out).map_err(io_err(&out))?;
            Some(out)
        }
        None => None,
    };
    let disk = found.ok_or_else(|| OciError::NoDisk(image.to_string()))?;
    let mut perms = fs::metadata(&disk).map_err(io_err(&disk))?.permissions();
    perms.set_readonly(true);
    fs::set_permissions(&disk, perms).map_err(io_err(&disk))?;
    Ok(disk)
}
