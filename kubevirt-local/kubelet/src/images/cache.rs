//! Reusing a written layout: `up` builds the node's images at every start, and hashing a large
//! launcher binary costs seconds. A layout records the [inputs](LocalImage::inputs) it was
//! written from (`<dir>/kubevirt-inputs`); while they are unchanged and its manifest is still
//! there, it is used as it is.

use std::path::Path;

use super::local::{BuiltImage, LocalImage, LocalImageError};

/// The file a layout's inputs are recorded in.
pub const INPUTS_FILE: &str = "kubevirt-inputs";

/// `image` as a layout in `dir`: the one already there when it was written from the same
/// inputs, else freshly written.
pub fn write_layout_cached(image: &LocalImage, dir: &Path) -> Result<BuiltImage, LocalImageError> {
    let inputs = image.inputs()?;
    let stamp = dir.join(INPUTS_FILE);
    if let Some(built) = reusable(&stamp, &inputs, dir) {
        return Ok(built);
    }
    // A layout being rewritten records nothing until it is complete.
    let _ = std::fs::remove_file(&stamp);
    let built = image.write_layout(dir)?;
    let record = format!(
        "{inputs} {} {} {}\n",
        built.digest,
        built.size,
        image.reference()
    );
    std::fs::write(&stamp, record).map_err(|source| LocalImageError::Write {
        image: image.reference(),
        path: stamp.clone(),
        source,
    })?;
    Ok(built)
}

/// `image` as a layout under the shared directory `shared`, in a subdirectory named by its
/// inputs: written once (aside, then renamed in, so concurrent writers and readers only ever
/// see a complete layout) and reused by every node built from the same inputs — the test
/// suites start dozens of nodes from the same binaries, and each image costs seconds to write.
pub fn write_layout_shared(
    image: &LocalImage,
    shared: &Path,
) -> Result<BuiltImage, LocalImageError> {
    let inputs = image.inputs()?;
    let name: String = image
        .reference()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = shared.join(format!("{name}-{}", &inputs[..inputs.len().min(16)]));
    if let Some(built) = reusable(&dir.join(INPUTS_FILE), &inputs, &dir) {
        return Ok(built);
    }
    let write_err = |path: &Path| {
        let (image, path) = (image.reference(), path.to_path_buf());
        move |source| LocalImageError::Write {
            image,
            path,
            source,
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let aside = shared.join(format!(".writing-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&aside).map_err(write_err(&aside))?;
    let written = write_layout_cached(image, &aside).and_then(|_| {
        match std::fs::rename(&aside, &dir) {
            Ok(()) => Ok(()),
            // Another node wrote the same layout first: use that one.
            Err(_) if dir.join(INPUTS_FILE).is_file() => Ok(()),
            Err(source) => Err(write_err(&dir)(source)),
        }
    });
    let _ = std::fs::remove_dir_all(&aside);
    written?;
    reusable(&dir.join(INPUTS_FILE), &inputs, &dir).ok_or_else(|| LocalImageError::Write {
        image: image.reference(),
        path: dir.clone(),
        source: std::io::Error::other("the shared layout is incomplete"),
    })
}

/// The layout recorded in `stamp` if it was written from `inputs` and its manifest is there.
fn reusable(stamp: &Path, inputs: &str, dir: &Path) -> Option<BuiltImage> {
    let text = std::fs::read_to_string(stamp).ok()?;
    let mut fields = text.split_whitespace();
    let (recorded, digest, size, reference) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if recorded != inputs {
        return None;
    }
    let (name, tag) = reference.rsplit_once(':')?;
    let hex = digest.strip_prefix("sha256:")?;
    let manifest = dir.join("blobs/sha256").join(hex);
    let size: u64 = size.parse().ok()?;
    let present = std::fs::metadata(&manifest).is_ok_and(|m| m.len() == size)
        && dir.join("index.json").is_file();
    present.then(|| BuiltImage {
        name: name.to_string(),
        tag: tag.to_string(),
        dir: dir.to_path_buf(),
        digest: digest.to_string(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_layout_is_written_once_per_inputs() {
        let dir = std::env::temp_dir().join(format!("kubelet-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let host = dir.join("input");
        std::fs::write(&host, "one").unwrap();
        let shared = dir.join("shared");
        let image = || {
            LocalImage::new("t/shared", "1")
                .host_file(&host, "/input")
                .unwrap()
        };
        let first = write_layout_shared(&image(), &shared).unwrap();
        let again = write_layout_shared(&image(), &shared).unwrap();
        assert_eq!((&first.dir, &first.digest), (&again.dir, &again.digest));
        let entries = || std::fs::read_dir(&shared).unwrap().count();
        assert_eq!(entries(), 1, "one layout, no leftovers");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&host, "two!").unwrap();
        let changed = write_layout_shared(&image(), &shared).unwrap();
        assert_ne!(changed.dir, first.dir);
        assert_ne!(changed.digest, first.digest);
        assert_eq!(entries(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_layout_is_reused_until_an_input_changes() {
        let dir = std::env::temp_dir().join(format!("kubelet-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let host = dir.join("input");
        std::fs::write(&host, "one").unwrap();
        let layout = dir.join("layout");
        let image = || {
            LocalImage::new("t/cache", "1")
                .host_file(&host, "/input")
                .unwrap()
        };
        // The layer is renamed into place whenever it is written: a new inode.
        let inodes = || {
            use std::os::unix::fs::MetadataExt;
            let mut v: Vec<(String, u64)> = std::fs::read_dir(layout.join("blobs/sha256"))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, e.metadata().unwrap().ino())
                })
                .collect();
            v.sort();
            v
        };
        let first = write_layout_cached(&image(), &layout).unwrap();
        let before = inodes();
        let again = write_layout_cached(&image(), &layout).unwrap();
        assert_eq!(again, first);
        assert_eq!(inodes(), before, "reused, not rewritten");
        image().write_layout(&layout).unwrap();
        assert_ne!(inodes(), before, "a rewrite is seen");
        assert_eq!(
            again.digest,
            image().write_layout(&dir.join("fresh")).unwrap().digest
        );

        // A changed input is a new layout.
        std::fs::write(&host, "two, longer").unwrap();
        let changed = write_layout_cached(&image(), &layout).unwrap();
        assert_ne!(changed.digest, first.digest);
        // A lost manifest is written again.
        let hex = changed.digest.strip_prefix("sha256:").unwrap();
        std::fs::remove_file(layout.join("blobs/sha256").join(hex)).unwrap();
        let rewritten = write_layout_cached(&image(), &layout).unwrap();
        assert_eq!(rewritten, changed);
        assert!(layout.join("blobs/sha256").join(hex).is_file());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
