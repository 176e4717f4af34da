//! Node-local images built from host files: a [`LocalImage`] is a list of host files placed at
//! given paths in the image (each dynamically linked one with the ELF interpreter and every
//! library the host's loader resolves for it, at their host paths), small files, directories,
//! symlinks, an entrypoint and a tag. [`LocalImage::write_layout`] writes it as an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`) with one uncompressed tar layer.
//!
//! Deterministic: the layer lists its entries sorted by path, with every time 0 and owner 0:0
//! (host files keep their permission bits), and the config and manifest are canonical JSON, so
//! the same inputs give the same digests: a restarted `up` serves the same image and containerd
//! has nothing new to pull.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::elf::{self, ClosureError};

/// The layer's media type: an uncompressed tar (containerd reads it as is; nothing is gained by
/// compressing what only travels over loopback).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The index's media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The annotation naming a manifest's tag in an image layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Directories the loader searches without `ld.so.cache` (Debian's multiarch ones included):
/// libraries elsewhere are found through `LD_LIBRARY_PATH` in the image's environment.
const DEFAULT_LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/usr/lib",
    "/lib64",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// Errors building a local image.
#[derive(Debug, thiserror::Error)]
pub enum LocalImageError {
    /// A host file could not be read.
    #[error("image {image}: reading {path}: {source}")]
    Read {
        /// The image's `name:tag`.
        image: String,
        /// The host file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A binary's libraries could not be resolved.
    #[error("image {image}: {source}")]
    Closure {
        /// The image's `name:tag`.
        image: String,
        /// Why.
        #[source]
        source: ClosureError,
    },
    /// The layout could not be written.
    #[error("image {image}: writing {path}: {source}")]
    Write {
        /// The image's `name:tag`.
        image: String,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A path inside the image is not absolute and clean.
    #[error("image {image}: {path:?} is not an absolute path without `..` inside the image")]
    Path {
        /// The image's `name:tag`.
        image: String,
        /// The path.
        path: String,
    },
    /// An input file an image is built from is not there.
    #[error(
        "{path} is not a file: build the release binaries first (cargo build --release) or point at where they are"
    )]
    MissingInput {
        /// The missing file.
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    /// A file copied from the host (following symlinks), with its permission bits.
    Host(PathBuf),
    Data(Vec<u8>, u32),
    Symlink(String),
}

/// An image being described; nothing is read until [`write_layout`](Self::write_layout).
#[derive(Debug, Clone)]
pub struct LocalImage {
    name: String,
    tag: String,
    /// Path inside the image (no leading `/`) → what is there.
    entries: BTreeMap<String, Entry>,
    /// Host files whose libraries go in too.
    binaries: Vec<PathBuf>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
}

/// A written image: where, and the digest its manifest is pulled by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The repository name (`kubevirt-rs/pause`).
    pub name: String,
    /// The tag.
    pub tag: String,
    /// The layout's directory.
    pub dir: PathBuf,
    /// `sha256:…` of the manifest.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: u64,
}

fn digest_hex(hash: Sha256) -> String {
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", digest_hex(Sha256::new_with_prefix(bytes)))
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The image-relative form of an absolute path (`/usr/bin/x` → `usr/bin/x`), if it is clean.
fn inside(path: &str) -> Option<String> {
    let rel = path.strip_prefix('/')?;
    let clean = !rel.is_empty()
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    clean.then(|| rel.to_string())
}

/// The image architecture of this host (`amd64`, `arm64`, ...), as OCI names it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl LocalImage {
    /// An empty image `name:tag`.
    pub fn new(name: impl Into<String>, tag: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tag: tag.into(),
            entries: BTreeMap::new(),
            binaries: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The same image under repository `name`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// `name:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    fn put(&mut self, at: &str, entry: Entry) -> Result<(), LocalImageError> {
        let rel = inside(at).ok_or_else(|| LocalImageError::Path {
            image: self.reference(),
            path: at.to_string(),
        })?;
        self.entries.insert(rel, entry);
        Ok(())
    }

    /// The host file `host` at `at` in the image; if it is dynamically linked, its interpreter
    /// and libraries go in too, at their host paths.
    pub fn host_file(
        mut self,
        host: impl Into<PathBuf>,
        at: &str,
    ) -> Result<Self, LocalImageError> {
        let host = host.into();
        self.put(at, Entry::Host(host.clone()))?;
        self.binaries.push(host);
        Ok(self)
    }

    /// A file with `data` and permission bits `mode`.
    pub fn file(
        mut self,
        at: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<Self, LocalImageError> {
        self.put(at, Entry::Data(data.into(), mode))?;
        Ok(self)
    }

    /// A directory (mode 0755).
    pub fn dir(mut self, at: &str) -> Result<Self, LocalImageError> {
        self.put(at, Entry::Dir)?;
        Ok(self)
    }

    /// A symlink `at` → `target`.
    pub fn symlink(mut self, at: &str, target: &str) -> Result<Self, LocalImageError> {
        self.put(at, Entry::Symlink(target.to_string()))?;
        Ok(self)
    }

    /// The entrypoint.
    pub fn entrypoint<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.entrypoint = argv.into_iter().map(Into::into).collect();
        self
    }

    /// The default arguments.
    pub fn cmd<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.cmd = argv.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable (`NAME=value`) of the image's config.
    pub fn env(mut self, var: impl Into<String>) -> Self {
        self.env.push(var.into());
        self
    }

    /// Every entry, with the binaries' libraries and every parent directory added.
    fn resolved(&self) -> Result<(BTreeMap<String, Entry>, Vec<String>), LocalImageError> {
        let mut entries = self.entries.clone();
        let mut library_dirs = Vec::new();
        for binary in &self.binaries {
            let libs = elf::closure(binary).map_err(|source| LocalImageError::Closure {
                image: self.reference(),
                source,
            })?;
            for lib in libs {
                let text = lib.to_string_lossy().into_owned();
                let Some(rel) = inside(&text) else { continue };
                entries.entry(rel).or_insert(Entry::Host(lib.clone()));
                if let Some(dir) = lib.parent().map(|d| d.to_string_lossy().into_owned())
                    && !DEFAULT_LIBRARY_DIRS.contains(&dir.as_str())
                    && !library_dirs.contains(&dir)
                {
                    library_dirs.push(dir);
                }
            }
        }
        let parents: Vec<String> = entries
            .keys()
            .flat_map(|p| {
                p.match_indices('/')
                    .map(|(i, _)| p[..i].to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        for p in parents {
            entries.entry(p).or_insert(Entry::Dir);
        }
        Ok((entries, library_dirs))
    }

    /// A digest of everything the layout is made of: the description, and for each host file
    /// (libraries included) its path, size, modification time, inode and mode. Equal inputs
    /// give equal layouts, so a layout written from the same inputs can be reused
    /// ([`super::cache`]).
    pub fn inputs(&self) -> Result<String, LocalImageError> {
        use std::os::unix::fs::MetadataExt;
        let (entries, library_dirs) = self.resolved()?;
        let mut hash = Sha256::new();
        let mut line = |s: String| {
            hash.update(s.as_bytes());
            hash.update(b"\n");
        };
        line(format!(
            "{} {:?} {:?} {:?} {library_dirs:?}",
            self.reference(),
            self.entrypoint,
            self.cmd,
            self.env
        ));
        for (path, entry) in &entries {
            line(match entry {
                Entry::Host(host) => {
                    let m = std::fs::metadata(host).map_err(|source| LocalImageError::Read {
                        image: self.reference(),
                        path: host.clone(),
                        source,
                    })?;
                    format!(
                        "{path} host {} {} {}.{} {} {:o}",
                        host.display(),
                        m.len(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.ino(),
                        m.mode()
                    )
                }
                other => format!("{path} {other:?}"),
            });
        }
        Ok(digest_hex(hash))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Writes the layer tar of `entries` into `out`.
    fn write_tar(
        &self,
        entries: &BTreeMap<String, Entry>,
        out: impl Write,
    ) -> Result<(), LocalImageError> {
        let image = self.reference();
        let mut tar = tar::Builder::new(out);
        let write_err = |path: &str| {
            let image = image.clone();
            let path = PathBuf::from(format!("/{path}"));
            move |source| LocalImageError::Write {
                image,
                path,
                source,
            }
        };
        for (path, entry) in entries {
            match entry {
                Entry::Dir => {
                    let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
                    tar.append_data(&mut h, format!("{path}/"), io::empty())
                        .map_err(write_err(path))?;
                }
                Entry::Data(data, mode) => {
                    let mut h = Self::header(tar::EntryType::Regular, *mode, data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())
                        .map_err(write_err(path))?;
                }
                Entry::Symlink(target) => {
                    let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, path, target)
                        .map_err(write_err(path))?;
                }
                Entry::Host(host) => {
                    let read = |source| LocalImageError::Read {
                        image: image.clone(),
                        path: host.clone(),
                        source,
                    };
                    let file = std::fs::File::open(host).map_err(read)?;
                    let meta = file.metadata().map_err(read)?;
                    if !meta.is_file() {
                        return Err(read(io::Error::other("not a regular file")));
                    }
                    let mode = meta.permissions().mode() & 0o7777;
                    let mut h = Self::header(tar::EntryType::Regular, mode, meta.len());
                    // A file that grows while read must not overrun its header's size.
                    let mut limited = file.take(meta.len());
                    tar.append_data(&mut h, path, &mut limited).map_err(read)?;
                }
            }
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(write_err(""))
    }

    /// Writes the image as an OCI image layout in `dir` (created if needed; blobs of an earlier
    /// image in it are removed) and returns its manifest digest. Equal inputs give equal bytes.
    pub fn write_layout(&self, dir: &Path) -> Result<BuiltImage, LocalImageError> {
        let image = self.reference();
        let werr = |path: &Path| {
            let image = image.clone();
            let path = path.to_path_buf();
            move |source| LocalImageError::Write {
                image,
                path,
                source,
            }
        };
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(werr(&blobs))?;
        let (entries, library_dirs) = self.resolved()?;

        let tmp = blobs.join(format!(".layer-{}.tmp", std::process::id()));
        let file = std::fs::File::create(&tmp).map_err(werr(&tmp))?;
        let mut hashing = Hashing {
            inner: io::BufWriter::new(file),
            hash: Sha256::new(),
            len: 0,
        };
        let written = self.write_tar(&entries, &mut hashing);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let (layer_len, layer_hex) = (hashing.len, digest_hex(hashing.hash));
        let layer_path = blobs.join(&layer_hex);
        std::fs::rename(&tmp, &layer_path).map_err(werr(&layer_path))?;

        let mut env =
            vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
        if !library_dirs.is_empty() {
            env.push(format!("LD_LIBRARY_PATH={}", library_dirs.join(":")));
        }
        env.extend(self.env.iter().cloned());
        let mut config_body = json!({"Env": env, "WorkingDir": "/"});
        if !self.entrypoint.is_empty() {
            config_body["Entrypoint"] = json!(self.entrypoint);
        }
        if !self.cmd.is_empty() {
            config_body["Cmd"] = json!(self.cmd);
        }
        let layer_digest = format!("sha256:{layer_hex}");
        let config = serde_json::to_vec(&json!({
            "architecture": host_architecture(),
            "os": "linux",
            "config": config_body,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))
        .unwrap_or_default();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_len}],
        }))
        .unwrap_or_default();
        let manifest_digest = digest(&manifest);
        let mut keep = vec![layer_hex];
        for blob in [&config, &manifest] {
            let hex = digest(blob)[7..].to_string();
            write_atomic(&blobs.join(&hex), blob).map_err(werr(&blobs.join(&hex)))?;
            keep.push(hex);
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {
                    REF_NAME: self.tag,
                    "io.containerd.image.name": image,
                },
            }],
        }))
        .unwrap_or_default();
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        write_atomic(&dir.join("oci-layout"), layout).map_err(werr(&dir.join("oci-layout")))?;
        write_atomic(&dir.join("index.json"), &index).map_err(werr(&dir.join("index.json")))?;
        // What an earlier image left here is not referenced any more.
        if let Ok(old) = std::fs::read_dir(&blobs) {
            for e in old.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) && !name.starts_with(".layer-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(BuiltImage {
            name: self.name.clone(),
            tag: self.tag.clone(),
            dir: dir.to_path_buf(),
            digest: manifest_digest,
            size: manifest.len() as u64,
        })
    }
}

/// Writes `data` to `path` through a temporary file and a rename, unless `path` already holds it.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(what: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kubelet-local-image-{what}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn tar_paths(layer: &Path) -> Vec<(String, u32)> {
        let mut a = tar::Archive::new(std::fs::File::open(layer).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn paths_must_be_absolute_and_clean() {
        for bad in ["bin/x", "/", "/a/../b", "/a//b", "/./a"] {
            assert!(
                matches!(
                    LocalImage::new("t", "1").file(bad, "x", 0o644),
                    Err(LocalImageError::Path { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_dynamic_binary_brings_its_libraries_and_the_layout_is_deterministic() {
        let me = std::env::current_exe().unwrap();
        let image = LocalImage::new("test/me", "1")
            .host_file(&me, "/usr/bin/me")
            .unwrap()
            .file("/etc/hello", "hi\n", 0o644)
            .unwrap()
            .symlink("/bin/me", "/usr/bin/me")
            .unwrap()
            .entrypoint(["/usr/bin/me"]);
        let (a, b) = (tempdir("a"), tempdir("b"));
        let first = image.write_layout(&a).unwrap();
        let second = image.write_layout(&b).unwrap();
        assert_eq!(first.digest, second.digest);
        // Writing again over the same layout changes nothing.
        assert_eq!(image.write_layout(&a).unwrap().digest, first.digest);

        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(a.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], first.digest.as_str());
        assert_eq!(index["manifests"][0]["annotations"][REF_NAME], "1");
        let blob = |d: &str| a.join("blobs/sha256").join(&d[7..]);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob(&first.digest)).unwrap()).unwrap();
        let layer = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let paths = tar_paths(&blob(&layer));
        let names: Vec<&str> = paths.iter().map(|(p, _)| p.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries are sorted");
        assert!(names.contains(&"usr/bin/me"), "{names:?}");
        assert!(names.contains(&"usr/"), "parents are listed: {names:?}");
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("ld-linux")), "{names:?}");
        assert!(
            paths
                .iter()
                .any(|(p, m)| p == "usr/bin/me" && m & 0o111 != 0)
        );
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], layer.as_str());
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/bin/me");
        // Only the three blobs of this image are left.
        assert_eq!(
            std::fs::read_dir(a.join("blobs/sha256")).unwrap().count(),
            3
        );

        // Another image in the same directory replaces the first one's blobs.
        let other = LocalImage::new("test/me", "2")
            .file("/x", "y", 0o644)
            .unwrap()
            .write_layout(&a)
            .unwrap();
        assert_ne!(other.digest, first.digest);
        assert_eq!(
            std::fs::read_dir(a.join("blobs/sha256")).unwrap().count(),
            3
        );
        std::fs::remove_dir_all(a).unwrap();
        std::fs::remove_dir_all(b).unwrap();
    }

    #[test]
    fn a_missing_host_file_names_it() {
        let d = tempdir("missing");
        let err = LocalImage::new("t", "1")
            .host_file("/nonexistent/kubevirt-launcher", "/usr/bin/x")
            .unwrap()
            .write_layout(&d)
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/kubevirt-launcher"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
