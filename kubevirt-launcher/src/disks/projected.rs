//! ConfigMap and Secret disks, as upstream attaches them: the object's keys, projected into a
//! directory as the kubelet mounts them into the pod (`<volumes>/<volume>/<key>`, the kubelet's
//! `..data` links followed), written as an ISO 9660 + Joliet image labelled with the volume's
//! `volumeLabel` (genisoimage's default `CDROM` when unset) and attached read-only. The image
//! lives in the VMI's ephemeral directory.

use super::{Layout, PrepareError, PreparedDisk};
use crate::cloudinit::iso9660::IsoImage;
use std::fs;
use std::path::Path;

/// The label an ISO gets when the volume names none (genisoimage's default).
pub const DEFAULT_LABEL: &str = "CDROM";

/// The keys under `dir`: visible regular files (symlinks followed), sorted by name.
fn keys(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // the kubelet's ..data and timestamped directories
        }
        let path = entry.path();
        if fs::metadata(&path)?.is_file() {
            out.push((name, fs::read(&path)?));
        }
    }
    out.sort();
    Ok(out)
}

/// Builds the ISO of volume `volume` (disk `name`) from `<volumes>/<volume>/`; a missing
/// directory is an empty disk when `optional`, else an error naming where it was looked for.
pub fn prepare(
    name: &str,
    kind: &str,
    optional: bool,
    volume_label: Option<&str>,
    layout: &Layout,
) -> Result<PreparedDisk, PrepareError> {
    let dir = layout.volumes_dir.join(name);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| PrepareError::Io {
            volume: name.into(),
            path,
            source,
        }
    };
    let files = match keys(&dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => Vec::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PrepareError::ProjectionMissing {
                volume: name.into(),
                kind: kind.into(),
                dir: dir.display().to_string(),
            });
        }
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut image = IsoImage::new(volume_label.unwrap_or(DEFAULT_LABEL));
    for (key, data) in files {
        image = image.with_file(key, data);
    }
    let bytes = image.to_bytes().map_err(|source| PrepareError::Iso {
        volume: name.into(),
        source,
    })?;
    let path = layout
        .ephemeral_dir
        .join("projected")
        .join(format!("{name}.iso"));
    let parent = layout.ephemeral_dir.join("projected");
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    fs::write(&path, bytes).map_err(io(&path))?;
    Ok(PreparedDisk {
        name: name.into(),
        path,
        readonly: true,
        base: None,
        ephemeral: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Store;

    /// A layout under a fresh test directory (removed when the test passes).
    fn layout(tag: &str) -> (kubevirt_testsupport::TestDir, Layout) {
        let root = kubevirt_testsupport::tempdir(&format!("projected-{tag}"));
        let layout = Layout {
            ephemeral_dir: root.join("ephemeral"),
            volumes_dir: root.join("volumes"),
            images: Store::new(root.join("images")),
        };
        (root, layout)
    }

    #[test]
    fn kubelet_projection_becomes_a_labelled_iso_without_hidden_entries() {
        let (_root, l) = layout("keys");
        let dir = l.volumes_dir.join("app-config");
        let data = dir.join("..2026_11_28_00_00_00.1");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("app.properties"), "color=blue\n").unwrap();
        std::os::unix::fs::symlink("..2026_11_28_00_00_00.1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/app.properties", dir.join("app.properties")).unwrap();
        let disk = prepare("app-config", "ConfigMap", false, Some("cfgdata"), &l).unwrap();
        assert!(disk.readonly && disk.ephemeral);
        let iso = fs::read(&disk.path).unwrap();
        assert_eq!(&iso[16 * 2048 + 40..16 * 2048 + 47], b"cfgdata");
        assert!(iso.windows(11).any(|w| w == b"color=blue\n"));
    }

    #[test]
    fn a_missing_object_is_an_error_unless_optional() {
        let (_root, l) = layout("missing");
        let err = prepare("creds", "Secret", false, None, &l)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("volume creds: Secret") && err.contains("creds"),
            "{err}"
        );
        let empty = prepare("creds", "Secret", true, None, &l).unwrap();
        let iso = fs::read(&empty.path).unwrap();
        assert_eq!(&iso[16 * 2048 + 40..16 * 2048 + 45], b"CDROM");
    }
}
