//! The content-addressed cache: verified blobs, tag → manifest-digest records (so a cached image
//! still starts when the registry is away), and extracted disks. Writes go to a temporary file
//! and are renamed into place, so a crash never leaves a half-written entry under a valid name.

use super::{OciError, io_err};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

use kubevirt_oci::digest::hex;
pub(super) use kubevirt_oci::digest_hex;
pub use kubevirt_oci::digest_of;

impl Store {
    /// A cache rooted at `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, parts: &[&str]) -> PathBuf {
        parts.iter().fold(self.dir.clone(), |p, s| p.join(s))
    }

    fn ensure(&self, path: &Path) -> Result<(), OciError> {
        match path.parent() {
            Some(p) => fs::create_dir_all(p).map_err(io_err(p)),
            None => Ok(()),
        }
    }

    /// Where blob `digest` lives, if cached.
    pub fn blob(&self, digest: &str) -> Option<PathBuf> {
        let p = self.path(&["blobs", "sha256", digest_hex(digest)?]);
        p.exists().then_some(p)
    }

    /// Store a blob from `reader`, verifying it against `digest`.
    pub fn put_blob(&self, digest: &str, reader: &mut dyn Read) -> Result<PathBuf, OciError> {
        let hex_part = digest_hex(digest).ok_or_else(|| OciError::DigestMismatch {
            expected: digest.into(),
            actual: "not a sha256 digest".into(),
        })?;
        let final_path = self.path(&["blobs", "sha256", hex_part]);
        self.ensure(&final_path)?;
        let tmp = final_path.with_extension(format!("partial-{}", std::process::id()));
        let mut out = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).map_err(io_err(&tmp))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&tmp))?;
        }
        out.sync_all().map_err(io_err(&tmp))?;
        let actual = format!("sha256:{}", hex(&hasher.finalize()));
        if actual != digest {
            let _ = fs::remove_file(&tmp);
            return Err(OciError::DigestMismatch {
                expected: digest.into(),
                actual,
            });
        }
        fs::rename(&tmp, &final_path).map_err(io_err(&final_path))?;
        Ok(final_path)
    }

    /// Remember that `image` (a tag) pointed at `manifest_digest`.
    pub fn put_tag(&self, image: &str, manifest_digest: &str) -> Result<(), OciError> {
        let p = self.path(&["tags", &hex(&Sha256::digest(image.as_bytes()))]);
        self.ensure(&p)?;
        fs::write(&p, manifest_digest).map_err(io_err(&p))
    }

    /// The manifest digest `image` pointed at when last pulled.
    pub fn tag(&self, image: &str) -> Option<String> {
        fs::read_to_string(self.path(&["tags", &hex(&Sha256::digest(image.as_bytes()))])).ok()
    }

    /// Where the file at `path` (default: the disk under `/disk/`) of manifest `digest` is (or
    /// will be) extracted. Different files of one image get different names.
    pub fn disk_path(&self, manifest_digest: &str, path: Option<&str>) -> Option<PathBuf> {
        let hex_part = digest_hex(manifest_digest)?;
        let name = match path {
            None => format!("{hex_part}.img"),
            Some(p) => format!(
                "{hex_part}-{}",
                &hex(&Sha256::digest(p.trim_start_matches('/').as_bytes()))[..16]
            ),
        };
        Some(self.path(&["disks", &name]))
    }
}
