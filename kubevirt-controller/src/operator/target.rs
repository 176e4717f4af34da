//! What the operator installs: the registry and tag of its own image (`VIRT_OPERATOR_IMAGE`,
//! `REGISTRY/virt-operator:TAG`), overridden by the CR's `spec.imageRegistry` and
//! `spec.imageTag`, with the CR's `spec.imagePullPolicy`.

use kubevirt_api::core::v1::KubeVirt;

use super::components::Install;

/// The operator's image name.
pub const OPERATOR_IMAGE: &str = "virt-operator";

/// Errors reading the operator's image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// The reference has no `REGISTRY/` part.
    #[error(
        "VIRT_OPERATOR_IMAGE {0:?}: no registry (expected REGISTRY/virt-operator:TAG, e.g. quay.io/kubevirt/virt-operator:v1.6.0)"
    )]
    NoRegistry(String),
    /// The reference names no tag (a digest alone says no version).
    #[error(
        "VIRT_OPERATOR_IMAGE {0:?}: no tag (expected REGISTRY/virt-operator:TAG; a digest reference says no version)"
    )]
    NoTag(String),
    /// The image is not `virt-operator`: the components' names could not be derived.
    #[error(
        "VIRT_OPERATOR_IMAGE {0:?}: the image is not named virt-operator (the components are REGISTRY/virt-api:TAG, ...)"
    )]
    NotOperator(String),
}

/// The registry and tag of `REGISTRY/virt-operator:TAG`.
pub fn parse_operator_image(image: &str) -> Result<(String, String), ImageError> {
    let Some((registry, rest)) = image.rsplit_once('/') else {
        return Err(ImageError::NoRegistry(image.into()));
    };
    let rest = rest.split('@').next().unwrap_or(rest);
    let Some((name, tag)) = rest.split_once(':') else {
        return Err(ImageError::NoTag(image.into()));
    };
    if name != OPERATOR_IMAGE {
        return Err(ImageError::NotOperator(image.into()));
    }
    if registry.is_empty() {
        return Err(ImageError::NoRegistry(image.into()));
    }
    if tag.is_empty() {
        return Err(ImageError::NoTag(image.into()));
    }
    Ok((registry.to_string(), tag.to_string()))
}

/// The install `kv` asks for, given the operator's own registry and tag.
pub fn install_for(kv: &KubeVirt, namespace: &str, registry: &str, tag: &str) -> Install {
    let nonempty = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
    Install {
        namespace: namespace.to_string(),
        registry: nonempty(&kv.spec.image_registry).unwrap_or_else(|| registry.to_string()),
        tag: nonempty(&kv.spec.image_tag).unwrap_or_else(|| tag.to_string()),
        pull_policy: nonempty(&kv.spec.image_pull_policy)
            .unwrap_or_else(|| "IfNotPresent".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_and_tag_come_from_the_operator_image() {
        assert_eq!(
            parse_operator_image("127.0.0.1:5000/virt-operator:v0.1.0"),
            Ok(("127.0.0.1:5000".into(), "v0.1.0".into()))
        );
        assert_eq!(
            parse_operator_image("quay.io/kubevirt/virt-operator:v1.6.0@sha256:ab"),
            Ok(("quay.io/kubevirt".into(), "v1.6.0".into()))
        );
        assert!(matches!(
            parse_operator_image("virt-operator:v1"),
            Err(ImageError::NoRegistry(_))
        ));
        assert!(matches!(
            parse_operator_image("r/virt-operator@sha256:ab"),
            Err(ImageError::NoTag(_))
        ));
        let e = parse_operator_image("r/operator:v1").unwrap_err();
        assert!(e.to_string().contains("not named virt-operator"), "{e}");
    }

    #[test]
    fn the_cr_overrides_registry_tag_and_pull_policy() {
        let mut kv = KubeVirt::new("kubevirt", Default::default());
        let i = install_for(&kv, "kubevirt", "r", "v1");
        assert_eq!((i.registry.as_str(), i.tag.as_str()), ("r", "v1"));
        assert_eq!(i.pull_policy, "IfNotPresent");
        kv.spec.image_registry = Some("other".into());
        kv.spec.image_tag = Some("v2".into());
        kv.spec.image_pull_policy = Some("Always".into());
        let i = install_for(&kv, "kubevirt", "r", "v1");
        assert_eq!(i.image("virt-api"), "other/virt-api:v2");
        assert_eq!(i.pull_policy, "Always");
    }
}
