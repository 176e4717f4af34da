//! The install manifests, shaped like upstream KubeVirt's release artifacts (issue 18):
//! `kubevirt-operator.yaml` (namespace `kubevirt`, the `KubeVirt` CRD, the priority class, the
//! operator's service account and RBAC, the `virt-operator` Deployment) and `kubevirt-cr.yaml`
//! (the `KubeVirt` CR that asks for an install). The operator installs everything else.
//!
//! The operator's RBAC is what installing needs and no more: it manages the components'
//! objects, CRDs, API services and webhook configurations by kind, and grants the components'
//! own roles through the `bind` and `escalate` verbs instead of holding every permission they
//! hold.

use std::path::Path;

use kubevirt_api::crd::CrdOptions;
use kubevirt_api::object::all_crds;
use serde_json::{Value, json};

/// The namespace everything is installed into.
pub const NAMESPACE: &str = "kubevirt";
/// The operator's service account, roles and Deployment.
pub const OPERATOR: &str = "virt-operator";

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestOptions {
    /// The registry (`quay.io/kubevirt`, `127.0.0.1:5000`).
    pub registry: String,
    /// The release tag (`v1.6.0`).
    pub tag: String,
    /// The image pull policy of the operator (and, through the CR, the components).
    pub pull_policy: String,
}

/// Errors writing the manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// An option is not usable in an image reference.
    #[error("--{flag} {value:?}: {why}")]
    Option {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A document could not be rendered.
    #[error("rendering {0}")]
    Render(String),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ManifestOptions {
    /// Checks the registry and tag can form image references.
    pub fn check(&self) -> Result<(), ManifestError> {
        let bad = |flag, value: &str, why| ManifestError::Option {
            flag,
            value: value.to_string(),
            why,
        };
        if !registry_ok(&self.registry) {
            return Err(bad(
                "registry",
                &self.registry,
                "not a registry (host[:port][/path])",
            ));
        }
        if !tag_ok(&self.tag) {
            return Err(bad(
                "tag",
                &self.tag,
                "not an image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})",
            ));
        }
        if !PULL_POLICIES.contains(&self.pull_policy.as_str()) {
            return Err(bad(
                "image-pull-policy",
                &self.pull_policy,
                "one of Always, IfNotPresent, Never",
            ));
        }
        Ok(())
    }

    /// `REGISTRY/NAME:TAG`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}:{}", self.registry, self.tag)
    }
}

/// Whether `registry` can prefix an image reference (`host[:port][/path]`).
pub fn registry_ok(registry: &str) -> bool {
    !registry.is_empty()
        && !registry.ends_with('/')
        && registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "./:-_[]".contains(c))
}

/// Whether `tag` is an image tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
pub fn tag_ok(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The image pull policies.
pub const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

const ALL: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const READ: &[&str] = &["get", "list", "watch"];

/// The operator's cluster-wide rules.
fn cluster_rules() -> Vec<Value> {
    vec![
        rule(
            &["kubevirt.io"],
            &["kubevirts", "kubevirts/status", "kubevirts/finalizers"],
            ALL,
        ),
        // BlockUninstallIfWorkloadsExist looks for workloads.
        rule(
            &["kubevirt.io"],
            &["virtualmachines", "virtualmachineinstances"],
            READ,
        ),
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            ALL,
        ),
        rule(&["apiregistration.k8s.io"], &["apiservices"], ALL),
        rule(
            &["admissionregistration.k8s.io"],
            &[
                "validatingwebhookconfigurations",
                "mutatingwebhookconfigurations",
            ],
            ALL,
        ),
        rule(
            &["rbac.authorization.k8s.io"],
            &["clusterroles", "clusterrolebindings"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete", "bind", "escalate",
            ],
        ),
        rule(&["scheduling.k8s.io"], &["priorityclasses"], ALL),
        rule(&[""], &["namespaces"], &["get", "list", "watch"]),
        rule(&[""], &["nodes"], READ),
        rule(&[""], &["events"], &["create", "patch", "update"]),
    ]
}

/// The operator's rules in its own namespace (the components live there).
fn namespace_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "serviceaccounts",
                "services",
                "configmaps",
                "secrets",
                "pods",
            ],
            ALL,
        ),
        rule(&["apps"], &["deployments", "daemonsets"], ALL),
        rule(&["policy"], &["poddisruptionbudgets"], ALL),
        rule(
            &["rbac.authorization.k8s.io"],
            &["roles", "rolebindings"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete", "bind", "escalate",
            ],
        ),
        rule(&["coordination.k8s.io"], &["leases"], ALL),
    ]
}

/// The documents of `kubevirt-operator.yaml`, in the order `kubectl create -f` needs them.
pub fn operator_documents(o: &ManifestOptions) -> Vec<Value> {
    let labels = json!({"kubevirt.io": OPERATOR});
    let kubevirt_crd = all_crds(&CrdOptions::default())
        .into_iter()
        .find(|c| c.spec.names.kind == "KubeVirt")
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(Value::Null);
    let binding = |kind: &str, role_kind: &str| {
        let mut meta = json!({"name": "kubevirt-operator", "labels": labels});
        if kind == "RoleBinding" {
            meta["namespace"] = json!(NAMESPACE);
        }
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "kubevirt-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": "kubevirt-operator", "namespace": NAMESPACE}]})
    };
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE,
            "labels": {"kubevirt.io": "", "pod-security.kubernetes.io/enforce": "privileged"}}}),
        kubevirt_crd,
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "kubevirt-cluster-critical"}, "value": 1_000_000_000,
            "globalDefault": false,
            "description": "This priority class should be used for core kubevirt components only."}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "kubevirt-operator", "namespace": NAMESPACE, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "kubevirt-operator", "labels": labels}, "rules": cluster_rules()}),
        binding("ClusterRoleBinding", "ClusterRole"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "kubevirt-operator", "namespace": NAMESPACE, "labels": labels},
            "rules": namespace_rules()}),
        binding("RoleBinding", "Role"),
        // virt-api reads the aggregator's front-proxy CA in kube-system: the operator binds
        // the Role that allows it there, and may do no more in kube-system.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "kubevirt-operator", "namespace": "kube-system", "labels": labels},
        "rules": [
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ALL},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"],
                "resourceNames": ["extension-apiserver-authentication-reader"]},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "kubevirt-operator", "namespace": "kube-system", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubevirt-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": "kubevirt-operator", "namespace": NAMESPACE}]}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": OPERATOR, "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                "strategy": {"type": "RollingUpdate"},
                "template": {"metadata": {"name": OPERATOR, "labels": {"kubevirt.io": OPERATOR, "name": OPERATOR, "prometheus.kubevirt.io": "true"}},
                    "spec": {"serviceAccountName": "kubevirt-operator",
                        "priorityClassName": "kubevirt-cluster-critical",
                        "containers": [{"name": OPERATOR, "image": o.image(OPERATOR),
                            "imagePullPolicy": o.pull_policy,
                            "env": [
                                {"name": "VIRT_OPERATOR_IMAGE", "value": o.image(OPERATOR)},
                                {"name": "KUBEVIRT_VERSION", "value": o.tag},
                                {"name": "WATCH_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            ],
                            "ports": [{"name": "metrics", "containerPort": 8443, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": "10m", "memory": "450Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
                        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}]}}}}),
    ]
}

/// The document of `kubevirt-cr.yaml`.
pub fn cr_document(o: &ManifestOptions) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": NAMESPACE},
        "spec": {"certificateRotateStrategy": {},
            "configuration": {"developerConfiguration": {"featureGates": []}},
            "customizeComponents": {}, "imagePullPolicy": o.pull_policy,
            "workloadUpdateStrategy": {}}})
}

/// `docs` as one multi-document YAML.
pub fn to_yaml(docs: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(
            &kubevirt_api::codec::to_yaml(d).map_err(|e| ManifestError::Render(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Writes `kubevirt-operator.yaml` and `kubevirt-cr.yaml` into `dir`; returns their paths.
pub fn write(o: &ManifestOptions, dir: &Path) -> Result<[std::path::PathBuf; 2], ManifestError> {
    o.check()?;
    let files = [
        (
            dir.join("kubevirt-operator.yaml"),
            to_yaml(&operator_documents(o))?,
        ),
        (dir.join("kubevirt-cr.yaml"), to_yaml(&[cr_document(o)])?),
    ];
    std::fs::create_dir_all(dir).map_err(|source| ManifestError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for (path, text) in &files {
        std::fs::write(path, text).map_err(|source| ManifestError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files.map(|(p, _)| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ManifestOptions {
        ManifestOptions {
            registry: "127.0.0.1:5000".into(),
            tag: "v0.1.0".into(),
            pull_policy: "IfNotPresent".into(),
        }
    }

    #[test]
    fn the_operator_runs_the_named_image_in_the_kubevirt_namespace() {
        let docs = operator_documents(&opts());
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "CustomResourceDefinition",
                "PriorityClass",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Role",
                "RoleBinding",
                "Deployment"
            ]
        );
        assert_eq!(docs[1]["metadata"]["name"], "kubevirts.kubevirt.io");
        let c = &docs[10]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "127.0.0.1:5000/virt-operator:v0.1.0");
        assert_eq!(
            docs[10]["spec"]["template"]["spec"]["serviceAccountName"],
            "kubevirt-operator"
        );
        let cr = cr_document(&opts());
        assert_eq!(cr["metadata"]["namespace"], NAMESPACE);
    }

    #[test]
    fn the_operator_grants_roles_by_bind_and_escalate_not_by_wildcards() {
        for r in cluster_rules().iter().chain(namespace_rules().iter()) {
            for key in ["apiGroups", "resources", "verbs"] {
                assert!(r[key].as_array().unwrap().iter().all(|v| v != "*"), "{r}");
            }
        }
    }

    #[test]
    fn bad_options_are_named() {
        let mut o = opts();
        o.tag = "v1:2".into();
        assert!(
            o.check()
                .unwrap_err()
                .to_string()
                .starts_with("--tag \"v1:2\"")
        );
        let mut o = opts();
        o.registry = "quay.io/kubevirt/".into();
        assert!(o.check().unwrap_err().to_string().starts_with("--registry"));
        let mut o = opts();
        o.pull_policy = "Sometimes".into();
        assert!(o.check().is_err());
    }
}
