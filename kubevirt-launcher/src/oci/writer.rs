//! Writing images: one gzip'd tar layer of files, its config and manifest, and an OCI image
//! layout holding them. The demo guest's image tool (`kubevirt-demo-image`) and the tests build images this way.

use super::store::digest_of;
use std::io::{self, Write};
use std::path::Path;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// An OCI image's blobs: one layer holding some files.
#[derive(Debug, Clone)]
pub struct ImageBlobs {
    /// The layer (`tar+gzip`).
    pub layer: Vec<u8>,
    /// The image config.
    pub config: Vec<u8>,
    /// The image manifest.
    pub manifest: Vec<u8>,
}

impl ImageBlobs {
    /// An image with `files` (`path`, contents; read-only) in one layer.
    pub fn with(files: &[(&str, &[u8])]) -> io::Result<Self> {
        let mut tar_bytes = Vec::new();
        {
            let mut b = tar::Builder::new(&mut tar_bytes);
            for (path, data) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o444);
                h.set_cksum();
                b.append_data(&mut h, path, *data)?;
            }
            b.finish()?;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_bytes)?;
        let layer = gz.finish()?;
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(&layer), "size": layer.len()}],
        }))?;
        Ok(ImageBlobs {
            layer,
            config,
            manifest,
        })
    }

    /// Writes an OCI image layout at `dir` with this image tagged `tag` (use it as
    /// `oci:<dir>:<tag>`).
    pub fn write_layout(&self, dir: &Path, tag: &str) -> io::Result<()> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        for b in [&self.layer, &self.config, &self.manifest] {
            std::fs::write(blobs.join(&digest_of(b)[7..]), b)?;
        }
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST_TYPE,
            "digest": digest_of(&self.manifest), "size": self.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
    }
}
