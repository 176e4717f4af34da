//! Makes an image present as a container's `imagePullPolicy` asks.

use k8s_cri::v1::{ImageSpec, ImageStatusRequest, PullImageRequest};

use crate::cri::{Cri, CriError};

/// Why an image is not there.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The pull failed (`ErrImagePull`).
    #[error("failed to pull image {image:?}: {source}")]
    Pull {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: CriError,
    },
    /// `imagePullPolicy: Never` and the image is missing (`ErrImageNeverPull`).
    #[error("container image {0:?} is not present with pull policy of Never")]
    NeverPull(String),
    /// The runtime could not say whether the image is present.
    #[error(transparent)]
    Status(CriError),
}

impl PullError {
    /// The container status reason upstream uses.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::NeverPull(_) => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }
}

/// The effective pull policy: as given, else `Always` for `:latest` or untagged images and
/// `IfNotPresent` otherwise (the API server's defaulting).
pub fn pull_policy(image: &str, given: Option<&str>) -> String {
    if let Some(p) = given.filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, "latest")) | None if !image.contains('@') => "Always".into(),
        _ => "IfNotPresent".into(),
    }
}

async fn present(cri: &Cri, image: &str) -> Result<Option<String>, CriError> {
    let status = cri
        .images
        .clone()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(crate::cri::client_call("ImageStatus"))?
        .into_inner();
    Ok(status.image.map(|i| i.id))
}

/// Makes `image` present under `policy` and returns its image ID (`sha256:…`).
pub async fn ensure_image(cri: &Cri, image: &str, policy: &str) -> Result<String, PullError> {
    if policy != "Always"
        && let Some(id) = present(cri, image).await.map_err(PullError::Status)?
    {
        return Ok(id);
    }
    if policy == "Never" {
        return Err(PullError::NeverPull(image.to_string()));
    }
    let reply = cri
        .images
        .clone()
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .map_err(crate::cri::client_call("PullImage"))
        .map_err(|source| PullError::Pull {
            image: image.to_string(),
            source,
        })?
        .into_inner();
    Ok(present(cri, image)
        .await
        .map_err(PullError::Status)?
        .unwrap_or(reply.image_ref))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy() {
        assert_eq!(pull_policy("busybox", None), "Always");
        assert_eq!(pull_policy("busybox:latest", None), "Always");
        assert_eq!(pull_policy("127.0.0.1:5000/busybox", None), "Always");
        assert_eq!(
            pull_policy("127.0.0.1:5000/busybox:1", None),
            "IfNotPresent"
        );
        assert_eq!(pull_policy("busybox@sha256:abc", None), "IfNotPresent");
        assert_eq!(pull_policy("busybox", Some("Never")), "Never");
    }
}
