//! Image references as a VMI names them: a registry image, or `oci:<dir>[:<tag>]` for a local
//! OCI image layout (what `skopeo` calls the `oci:` transport).

use crate::oci::{ImageRef, ImageSource, Layout, OciError, Reference, Registry};

/// The source and reference for `image`; registries are spoken to over plain HTTP when listed
/// in `plain_http`, through the mirrors configured under `mirrors` (containerd's
/// `config_path`) if given.
pub fn image_source(
    image: &str,
    plain_http: &[String],
    mirrors: Option<&std::path::Path>,
) -> Result<(Box<dyn ImageSource>, ImageRef), OciError> {
    if let Some(rest) = image.strip_prefix("oci:") {
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') => (d, t),
            _ => (rest, "latest"),
        };
        let reference = ImageRef {
            registry: "oci-layout".into(),
            repository: dir.trim_start_matches('/').replace('/', "-").to_lowercase(),
            reference: Reference::Tag(tag.into()),
        };
        return Ok((Box::new(Layout::new(dir)), reference));
    }
    let mut registry = Registry::new(plain_http.to_vec());
    if let Some(dir) = mirrors {
        registry = registry.with_mirrors(dir);
    }
    Ok((Box::new(registry), image.parse()?))
}
