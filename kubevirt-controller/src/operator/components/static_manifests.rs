//! `kubevirt-controller/manifests/{vmi-pods,subresource-api}.yaml`, for installing the
//! components by hand: rendered from the operator's builders (a test keeps the files equal to
//! this output; `UPDATE_MANIFESTS=1 cargo test -p kubevirt-controller static_manifests`
//! rewrites them), so there is no second hand-written copy.

use serde_json::{Value, json};

use super::{Install, api, controller, handler, rbac};

/// The install the static files describe: images `kubevirt-rs/NAME:latest`.
pub fn install() -> Install {
    Install {
        namespace: crate::manifests::NAMESPACE.into(),
        registry: "kubevirt-rs".into(),
        tag: "latest".into(),
        pull_policy: "IfNotPresent".into(),
    }
}

const VMI_PODS_HEADER: &str = "\
# Generated from kubevirt-controller/src/operator/components (the operator's builders); do not
# edit: `UPDATE_MANIFESTS=1 cargo test -p kubevirt-controller static_manifests` rewrites it.
# The operator (`kubevirt-controller operator`, kubevirt-operator.yaml) installs the same objects.
#
# VMIs in virt-launcher pods on a real cluster (docs/DEPLOY.md): virt-controller with the
# VirtualMachineInstance controller (`kubevirt-controller run --vmi-pods`), and virt-handler,
# the node agent in pods mode (`kubevirt-controller node --mode pods`), as a DaemonSet on every
# node that runs VMs (label kubevirt.io/schedulable=true, which the launcher pods select). Both
# sides name the same launcher root and image cache. The agent serves its endpoint to virt-api
# (subresource-api.yaml) with the token and certificate in Secrets kubevirt-node-agent-token
# (token, ca.crt) and kubevirt-virt-handler-server-certs (tls.crt, tls.key: a certificate for
# the name kubevirt-node-agent signed by ca.crt). The CRDs first:
#   kubevirt-controller crds | kubectl apply --server-side -f -
";

const API_HEADER: &str = "\
# Generated from kubevirt-controller/src/operator/components (the operator's builders); do not
# edit: `UPDATE_MANIFESTS=1 cargo test -p kubevirt-controller static_manifests` rewrites it.
# The operator installs the same objects and generates the certificates below itself.
#
# The subresource API (subresources.kubevirt.io) on a real cluster: virt-api
# (`kubevirt-controller api`) behind an APIService, as upstream's. Before applying:
#   - a serving certificate for virt-api.kubevirt.svc in Secret kubevirt/kubevirt-virt-api-certs
#     (tls.crt, tls.key), and its CA, base64, as both APIServices' spec.caBundle (left out here);
#   - the node agents' token and CA in Secret kubevirt/kubevirt-node-agent-token (keys: token,
#     ca.crt), as virt-handler uses (vmi-pods.yaml).
# Callers are authenticated by the aggregator's front-proxy certificate (X-Remote-User/Group,
# CA from kube-system/extension-apiserver-authentication) or a bearer token (TokenReview), and
# authorised per request by SubjectAccessReview (the kubevirt-subresources ClusterRole
# aggregates into admin and edit).
";

/// The documents of `vmi-pods.yaml`.
pub fn vmi_pods_documents() -> Vec<Value> {
    let i = install();
    let mut docs =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": i.namespace}})];
    docs.extend(rbac::controller_objects(&i));
    docs.push(controller::deployment(&i));
    docs.extend(rbac::handler_objects(&i));
    docs.push(handler::daemonset(&i));
    docs
}

/// The documents of `subresource-api.yaml`.
pub fn subresource_api_documents() -> Vec<Value> {
    let i = install();
    let mut docs = rbac::api_objects(&i);
    docs.extend(api::objects(&i, None));
    docs
}

/// `header` and `docs` as one multi-document YAML file.
pub fn render(header: &str, docs: &[Value]) -> Result<String, kubevirt_api::codec::DecodeError> {
    let mut out = header.to_string();
    for (n, d) in docs.iter().enumerate() {
        if n > 0 {
            out.push_str("---\n");
        }
        out.push_str(&kubevirt_api::codec::to_yaml(d)?);
    }
    Ok(out)
}

/// The two files: `(file name, contents)`.
pub fn files() -> Result<[(&'static str, String); 2], kubevirt_api::codec::DecodeError> {
    Ok([
        (
            "vmi-pods.yaml",
            render(VMI_PODS_HEADER, &vmi_pods_documents())?,
        ),
        (
            "subresource-api.yaml",
            render(API_HEADER, &subresource_api_documents())?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_manifests_are_the_builders_output() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        for (name, text) in files().unwrap() {
            let path = dir.join(name);
            if std::env::var_os("UPDATE_MANIFESTS").is_some() {
                std::fs::write(&path, &text).unwrap();
            }
            let on_disk = std::fs::read_to_string(&path).unwrap();
            assert!(
                on_disk == text,
                "{} differs from the operator's builders: run \
                 `UPDATE_MANIFESTS=1 cargo test -p kubevirt-controller static_manifests`",
                path.display()
            );
            // Each document parses back.
            for doc in text.split("\n---\n") {
                let _: Value = serde_saphyr::from_str(doc).expect("a YAML document");
            }
        }
    }
}
