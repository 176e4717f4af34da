//! The disk file inside an image's layers: each layer (a tar, plain, gzip or zstd compressed;
//! told apart by its magic bytes) is scanned bottom first, a later layer's file replaces an
//! earlier one, and whiteouts (`.wh.<name>`, the opaque `.wh..wh..opq`) delete what lower layers
//! put there, as a container runtime's union of the layers would show it.
//!
//! By default the disk is the regular file directly under `disk/` (a containerDisk's
//! convention, which CDI's registry import follows too); a path may be asked for instead. With
//! several files under `disk/`, the one written last wins. Links are not followed.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A layer that could not be read, or the disk not written.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct LayerError {
    /// What was being done.
    pub what: String,
    /// The failure.
    #[source]
    pub source: io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> LayerError {
    let what = what.into();
    move |source| LayerError { what, source }
}

/// Finds the disk across the layers, copying it to `out` as it is met.
#[derive(Debug)]
pub struct DiskFinder {
    wanted: Option<String>,
    out: PathBuf,
    layer: usize,
    /// The path inside the image and the layer of the file now at `out`.
    found: Option<(String, usize)>,
}

/// The compression of a layer, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

/// The compression `head` (a layer's first bytes) announces.
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

fn normalize(path: &Path) -> String {
    let s = path.to_string_lossy();
    let s = s.trim_start_matches("./").trim_start_matches('/');
    s.trim_end_matches('/').to_string()
}

impl DiskFinder {
    /// A finder for `wanted` (a path in the image; `None`: the file under `disk/`) that writes
    /// it to `out`.
    pub fn new(wanted: Option<&str>, out: impl Into<PathBuf>) -> Self {
        Self {
            wanted: wanted.map(|w| w.trim_start_matches('/').to_string()),
            out: out.into(),
            layer: 0,
            found: None,
        }
    }

    fn wants(&self, name: &str) -> bool {
        match &self.wanted {
            Some(w) => name == w,
            None => name
                .strip_prefix("disk/")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
        }
    }

    /// Whether the whiteout entry `name` hides the file found in a lower layer.
    fn hides(&self, name: &str) -> bool {
        let Some((found, layer)) = &self.found else {
            return false;
        };
        if *layer >= self.layer {
            return false;
        }
        let (dir, base) = match name.rsplit_once('/') {
            Some((d, b)) => (format!("{d}/"), b),
            None => (String::new(), name),
        };
        if base == ".wh..wh..opq" {
            return found.starts_with(&dir);
        }
        let Some(target) = base.strip_prefix(".wh.") else {
            return false;
        };
        let target = format!("{dir}{target}");
        *found == target || found.starts_with(&format!("{target}/"))
    }

    /// Scans the next layer up.
    ///
    /// # Errors
    /// The layer's (or its decompression's) read error, or writing the disk failing.
    pub fn layer(&mut self, blob: &mut dyn Read) -> Result<(), LayerError> {
        let index = self.layer;
        let what = || format!("layer {index}");
        let mut buffered = BufReader::with_capacity(1 << 16, blob);
        let compression = sniff(buffered.fill_buf().map_err(err(what()))?);
        let reader: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(buffered)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(err(what()))?)
            }
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(err(what()))? {
            let mut entry = entry.map_err(err(what()))?;
            let name = normalize(&entry.path().map_err(err(what()))?);
            if self.hides(&name) {
                fs::remove_file(&self.out)
                    .map_err(err(format!("removing {} (whited out)", self.out.display())))?;
                self.found = None;
                continue;
            }
            let whiteout = name
                .rsplit('/')
                .next()
                .is_some_and(|b| b.starts_with(".wh."));
            if whiteout || !entry.header().entry_type().is_file() || !self.wants(&name) {
                continue;
            }
            self.write(&mut entry).map_err(err(format!(
                "{name} of {} to {}",
                what(),
                self.out.display()
            )))?;
            self.found = Some((name, index));
        }
        // What follows the archive's end (padding) is the caller's to drain.
        self.layer += 1;
        Ok(())
    }

    fn write(&self, entry: &mut dyn Read) -> io::Result<()> {
        if let Some(dir) = self.out.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut tmp_name = self.out.as_os_str().to_owned();
        tmp_name.push(format!(".partial-{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        let result = (|| {
            let mut dst = fs::File::create(&tmp)?;
            io::copy(entry, &mut dst)?;
            dst.sync_all()?;
            fs::rename(&tmp, &self.out)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// The disk's path in the image, if the layers scanned so far hold one.
    pub fn found(&self) -> Option<&str> {
        self.found.as_ref().map(|(n, _)| n.as_str())
    }

    /// Where the disk was written, if the layers held one.
    pub fn finish(self) -> Option<PathBuf> {
        self.found.map(|_| self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Link(&'a str, &'a str),
    }

    fn tar(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            match e {
                E::File(p, data) => {
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::Dir(p) => {
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                E::Link(p, target) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Symlink);
                    b.append_link(&mut h, p, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kvoci-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn scan(layers: &[Vec<u8>], wanted: Option<&str>, tag: &str) -> Option<Vec<u8>> {
        let out = dir(tag).join("disk.img");
        let mut f = DiskFinder::new(wanted, &out);
        for l in layers {
            f.layer(&mut &l[..]).unwrap();
        }
        f.finish().map(|p| fs::read(p).unwrap())
    }

    #[test]
    fn later_layers_override_and_every_compression_is_read() {
        let l0 = gzip(&tar(&[E::Dir("disk/"), E::File("disk/a.img", b"old")]));
        let l1 = zstd::encode_all(&tar(&[E::File("./disk/a.img", b"new")])[..], 1).unwrap();
        let l2 = tar(&[E::File("etc/other", b"x"), E::File("disk/sub/deep", b"no")]);
        assert_eq!(
            scan(&[l0.clone(), l1.clone(), l2.clone()], None, "order"),
            Some(b"new".to_vec())
        );
        assert_eq!(scan(&[l1, l0], None, "order2"), Some(b"old".to_vec()));
        assert_eq!(
            scan(&[l2], None, "none"),
            None,
            "no file directly under disk/"
        );
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        let base = tar(&[E::File("disk/a.img", b"base")]);
        let wh = tar(&[E::File("disk/.wh.a.img", b"")]);
        assert_eq!(scan(&[base.clone(), wh.clone()], None, "wh"), None);
        let opaque = tar(&[E::File("disk/.wh..wh..opq", b"")]);
        assert_eq!(scan(&[base.clone(), opaque], None, "opq"), None);
        let whole_dir = tar(&[E::File(".wh.disk", b"")]);
        assert_eq!(scan(&[base.clone(), whole_dir], None, "whdir"), None);
        // A whiteout does not hide what its own layer adds (opaque marker after the file).
        let same = tar(&[
            E::File("disk/b.img", b"mine"),
            E::File("disk/.wh..wh..opq", b""),
        ]);
        assert_eq!(
            scan(&[base.clone(), same], None, "same"),
            Some(b"mine".to_vec())
        );
        // A whiteout of another name leaves the disk alone; one below it changes nothing.
        let other = tar(&[E::File("disk/.wh.zzz", b"")]);
        assert_eq!(
            scan(&[wh, base.clone(), other], None, "other"),
            Some(b"base".to_vec())
        );
    }

    #[test]
    fn links_are_not_disks_and_a_named_path_is_found() {
        let l = tar(&[
            E::Link("disk/link.img", "/etc/passwd"),
            E::File("boot/vmlinuz", b"k"),
        ]);
        assert_eq!(scan(std::slice::from_ref(&l), None, "link"), None);
        assert_eq!(
            scan(&[l], Some("/boot/vmlinuz"), "named"),
            Some(b"k".to_vec())
        );
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
    }

    #[test]
    fn a_truncated_layer_is_an_error_naming_it() {
        let l = gzip(&tar(&[E::File("disk/a.img", &[1u8; 4096])]));
        let out = dir("trunc").join("disk.img");
        let mut f = DiskFinder::new(None, &out);
        let e = f.layer(&mut &l[..l.len() / 2]).unwrap_err();
        assert!(
            e.to_string().starts_with("layer 0") || e.to_string().contains("layer 0"),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_as_a_layer_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let out = dir("prop").join("disk.img");
            let mut f = DiskFinder::new(None, &out);
            let _ = f.layer(&mut &bytes[..]);
        }
    }
}
