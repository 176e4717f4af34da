//! Writing images: one gzip'd tar layer of files, its config and manifest, and an OCI image
//! layout holding them. The demo guest's image tool (`kubevirt-demo-image`) and the tests build images this way.

use super::store::digest_of;
use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, Digest, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    SCHEMA_VERSION,
};
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

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

/// The descriptor of `blob`.
fn descriptor(media_type: MediaType, blob: &[u8]) -> io::Result<Descriptor> {
    let digest: Digest = digest_of(blob).parse().map_err(io::Error::other)?;
    Ok(Descriptor::new(media_type, blob.len() as u64, digest))
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
        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config)?)
            .layers(vec![descriptor(MediaType::ImageLayerGzip, &layer)?])
            .build()
            .map_err(io::Error::other)?;
        Ok(ImageBlobs {
            layer,
            config,
            manifest: serde_json::to_vec(&manifest)?,
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
        let mut entry = descriptor(MediaType::ImageManifest, &self.manifest)?;
        entry.set_annotations(Some(HashMap::from([(
            ANNOTATION_REF_NAME.to_string(),
            tag.to_string(),
        )])));
        let index = ImageIndexBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![entry])
            .build()
            .map_err(io::Error::other)?;
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
    }
}
