//! The objects of an install, built from one [`Install`] (registry, tag, pull policy,
//! namespace): the components' service accounts and RBAC ([`rbac`]), virt-api with its
//! Service and APIServices ([`api`]), the virt-controller Deployment ([`controller`]) and the
//! virt-handler DaemonSet ([`handler`]). The operator applies them; the static manifests in
//! `kubevirt-controller/manifests/` are rendered from the same builders ([`static_manifests`]).

pub mod api;
pub mod controller;
pub mod handler;
pub mod rbac;
pub mod static_manifests;

use serde_json::{Value, json};

/// The field manager and `app.kubernetes.io/managed-by` value of everything the operator
/// applies.
pub const MANAGER: &str = "virt-operator";
/// The label every managed object carries.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Upstream's install-strategy annotations: the version, the registry and an identifier of
/// the install a component belongs to (annotations, as upstream's: a registry is no label
/// value).
pub const VERSION_ANNOTATION: &str = "kubevirt.io/install-strategy-version";
/// See [`VERSION_ANNOTATION`].
pub const REGISTRY_ANNOTATION: &str = "kubevirt.io/install-strategy-registry";
/// See [`VERSION_ANNOTATION`].
pub const IDENTIFIER_ANNOTATION: &str = "kubevirt.io/install-strategy-identifier";

/// Where the launcher and node agent meet on every node (`cli::pods::DEFAULT_LAUNCHER_ROOT`).
pub const LAUNCHER_ROOT: &str = crate::cli::pods::DEFAULT_LAUNCHER_ROOT;
/// The launchers' image cache on every node.
pub const IMAGE_CACHE: &str = crate::cli::pods::DEFAULT_IMAGE_CACHE;
/// The node agents' endpoint port (virt-api reaches them on the node's InternalIP).
pub const AGENT_PORT: u16 = 8186;
/// The port of the components' Prometheus `/metrics` (upstream's 8443, named `metrics`).
pub const METRICS_PORT: u16 = 8443;
/// The node agent's `/metrics` port: it runs on the host's network, so not the common 8443.
pub const HANDLER_METRICS_PORT: u16 = 8187;

/// Secret holding the CA every component certificate is signed by (`tls.crt`, `tls.key`).
pub const CA_SECRET: &str = "kubevirt-ca";
/// ConfigMap with the CA bundle (`ca-bundle`), for whoever verifies the components.
pub const CA_CONFIGMAP: &str = "kubevirt-ca";
/// Secret with virt-api's serving certificate (`tls.crt`, `tls.key`).
pub const API_CERT_SECRET: &str = "kubevirt-virt-api-certs";
/// Secret with the node agents' endpoint certificate (`tls.crt`, `tls.key`).
pub const HANDLER_CERT_SECRET: &str = "kubevirt-virt-handler-server-certs";
/// Secret with the node agents' endpoint token (`token`) and their CA (`ca.crt`).
pub const AGENT_TOKEN_SECRET: &str = "kubevirt-node-agent-token";

/// What an install is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// The namespace of the components (the operator's).
    pub namespace: String,
    /// The registry (`127.0.0.1:5000`, `quay.io/kubevirt`).
    pub registry: String,
    /// The images' tag: the version installed.
    pub tag: String,
    /// The components' image pull policy.
    pub pull_policy: String,
}

impl Install {
    /// `REGISTRY/NAME:TAG`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}:{}", self.registry, self.tag)
    }

    /// The metadata of a managed object: its labels (`kubevirt.io: <component>` and the
    /// managed-by label) and the install-strategy annotations.
    pub fn metadata(&self, name: &str, namespaced: bool, component: &str) -> Value {
        let mut meta = json!({
            "name": name,
            "labels": {"kubevirt.io": component, MANAGED_BY: MANAGER,
                "app.kubernetes.io/component": "kubevirt", "app.kubernetes.io/part-of": "kubevirt"},
            "annotations": {VERSION_ANNOTATION: self.tag, REGISTRY_ANNOTATION: self.registry,
                IDENTIFIER_ANNOTATION: self.identifier()},
        });
        if namespaced {
            meta["namespace"] = json!(self.namespace);
        }
        meta
    }

    /// Names this install: `REGISTRY/TAG` (upstream hashes its install strategy; ours is the
    /// registry and tag alone, as nothing else changes the objects but the code).
    pub fn identifier(&self) -> String {
        format!("{}/{}", self.registry, self.tag)
    }

    /// A pod template's metadata: the component's labels only (no version: the selector
    /// must stay, and the image is what rolls the pods).
    pub fn pod_metadata(&self, component: &str) -> Value {
        json!({"labels": {"kubevirt.io": component, MANAGED_BY: MANAGER, "prometheus.kubevirt.io": "true"}})
    }

    /// A container running `image` (whose entrypoint is `kubevirt-controller ROLE`) with `args`.
    pub fn container(&self, name: &str, image: &str, args: &[String]) -> Value {
        json!({"name": name, "image": self.image(image), "imagePullPolicy": self.pull_policy,
            "args": args})
    }

    /// Like [`Install::container`], serving `/metrics` on `port` (the container port named
    /// `metrics` that upstream's `kubevirt-prometheus-metrics` Service selects).
    pub fn metrics_container(&self, name: &str, image: &str, args: &[String], port: u16) -> Value {
        let mut c = self.container(name, image, args);
        c["ports"] = json!([{"name": "metrics", "containerPort": port, "protocol": "TCP"}]);
        c
    }
}

/// Every object of an install except the CRDs, in the order they can be created: service
/// accounts and RBAC, then the workloads and what reaches them.
/// `ca_pem` is the CA the APIServices' `caBundle` carries (none: left out, for a manifest whose
/// user fills it in).
pub fn desired(install: &Install, ca_pem: Option<&str>) -> Vec<Value> {
    let mut out = rbac::objects(install);
    out.extend(api::objects(install, ca_pem));
    out.push(controller::deployment(install));
    out.push(handler::daemonset(install));
    out
}

/// `spec.template.spec.containers[0].args` of a workload, as strings.
pub fn container_args(workload: &Value) -> Vec<String> {
    workload["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn install() -> Install {
        Install {
            namespace: "kubevirt".into(),
            registry: "127.0.0.1:5000".into(),
            tag: "v0.1.0".into(),
            pull_policy: "IfNotPresent".into(),
        }
    }

    #[test]
    fn every_object_is_labelled_and_annotated_with_its_install() {
        let objects = desired(&install(), Some("CA"));
        assert!(objects.len() > 10);
        for o in &objects {
            let meta = &o["metadata"];
            assert_eq!(meta["labels"][MANAGED_BY], MANAGER, "{o}");
            assert_eq!(meta["annotations"][VERSION_ANNOTATION], "v0.1.0", "{o}");
            assert_eq!(
                meta["annotations"][REGISTRY_ANNOTATION], "127.0.0.1:5000",
                "{o}"
            );
        }
    }

    #[test]
    fn a_new_tag_changes_every_pod_template_image() {
        let old = desired(&install(), Some("CA"));
        let new = desired(
            &Install {
                tag: "v0.2.0".into(),
                ..install()
            },
            None,
        );
        let images = |objs: &[Value]| -> Vec<String> {
            objs.iter()
                .filter(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
                .map(|o| {
                    o["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        assert_eq!(
            images(&old),
            [
                "127.0.0.1:5000/virt-api:v0.1.0",
                "127.0.0.1:5000/virt-controller:v0.1.0",
                "127.0.0.1:5000/virt-handler:v0.1.0"
            ]
        );
        assert!(images(&new).iter().all(|i| i.ends_with(":v0.2.0")));
    }
}
