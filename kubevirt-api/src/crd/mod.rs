//! CustomResourceDefinitions for every kind, finished the way upstream ships them.
//!
//! `kube`'s derive produces each CRD's structural schema from the typed API; [`finish`] adds what the
//! derive cannot know: upstream's names, served versions, subresources and printer columns
//! ([`envelope`]), and the CEL rules ([`cel`]) that let a plain cluster enforce the checks upstream runs
//! in its webhook.

pub mod cel;
pub mod envelope;
pub(crate) mod schema;

use self::envelope::{Version, envelope_of};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceSubresourceScale,
    CustomResourceSubresourceStatus, CustomResourceSubresources,
};

/// How CRDs are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrdOptions {
    /// Keep field descriptions in the schemas (for `kubectl explain`). Off by default: with them the
    /// largest CRDs exceed the 256 KiB `last-applied-configuration` annotation limit of a client-side
    /// `kubectl apply`; use them with `kubectl apply --server-side` or `kubectl create`.
    pub descriptions: bool,
}

/// Versions served for `kind` (storage version first).
pub fn served_versions(kind: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = envelope_of(kind)
        .map(|e| e.versions.to_vec())
        .unwrap_or_default()
        .into_iter()
        .map(Version::name)
        .collect();
    versions.dedup();
    versions
}

/// Finish a derived CRD of `kind` as upstream ships it.
pub fn finish(
    mut crd: CustomResourceDefinition,
    kind: &str,
    options: &CrdOptions,
) -> CustomResourceDefinition {
    let Some(env) = envelope_of(kind) else {
        return crd;
    };
    let names = &mut crd.spec.names;
    names.short_names = (!env.short_names.is_empty())
        .then(|| env.short_names.iter().map(|s| s.to_string()).collect());
    names.categories = (!env.categories.is_empty())
        .then(|| env.categories.iter().map(|s| s.to_string()).collect());

    let Some(mut template) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    if let Some(schema) = template
        .schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
    {
        schema::finish(schema, kind, options);
    }
    let status = env
        .status
        .then(|| CustomResourceSubresourceStatus(serde_json::Value::Object(Default::default())));
    let scale = env.scale.then(|| CustomResourceSubresourceScale {
        spec_replicas_path: ".spec.replicas".into(),
        status_replicas_path: ".status.replicas".into(),
        label_selector_path: Some(".status.labelSelector".into()),
    });
    template.subresources = (status.is_some() || scale.is_some())
        .then_some(CustomResourceSubresources { status, scale });
    template.additional_printer_columns = (!env.columns.is_empty()).then(|| {
        env.columns
            .iter()
            .map(|c| CustomResourceColumnDefinition {
                name: c.name.into(),
                type_: c.type_.into(),
                json_path: c.json_path.into(),
                priority: (c.priority != 0).then_some(c.priority),
                ..Default::default()
            })
            .collect()
    });
    let group = crd.spec.group.clone();
    crd.spec.versions = env
        .versions
        .iter()
        .map(|v| {
            let mut version = template.clone();
            version.name = v.name().to_string();
            version.served = true;
            version.storage = matches!(v, Version::Storage(_) | Version::DeprecatedStorage(_));
            let deprecated = matches!(v, Version::Deprecated(_) | Version::DeprecatedStorage(_));
            version.deprecated = deprecated.then_some(true);
            version.deprecation_warning = deprecated.then(|| {
                format!(
                    "{group}/{} {kind} is now deprecated and will be removed in a future release.",
                    v.name()
                )
            });
            version
        })
        .collect();
    crd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{KINDS, all_crds};

    #[test]
    fn every_kind_has_an_envelope_with_one_storage_version() {
        for kind in KINDS {
            let env = envelope_of(kind).unwrap_or_else(|| panic!("{kind} has no envelope"));
            let storage = env
                .versions
                .iter()
                .filter(|v| matches!(v, Version::Storage(_) | Version::DeprecatedStorage(_)))
                .count();
            assert_eq!(storage, 1, "{kind}");
        }
    }

    #[test]
    fn vmi_has_no_status_subresource_and_vmirs_scales() {
        let crds = all_crds(&CrdOptions::default());
        let vmi = crds
            .iter()
            .find(|c| c.spec.names.kind == "VirtualMachineInstance")
            .unwrap();
        assert!(vmi.spec.versions.iter().all(|v| v.subresources.is_none()));
        let rs = crds
            .iter()
            .find(|c| c.spec.names.kind == "VirtualMachineInstanceReplicaSet")
            .unwrap();
        let scale = rs.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .scale
            .as_ref()
            .unwrap();
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.labelSelector")
        );
        let names: Vec<_> = rs
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.storage))
            .collect();
        assert_eq!(names, [("v1", true), ("v1alpha3", false)]);
    }
}
