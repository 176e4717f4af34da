//! Built-in kinds: what a KubeVirt control plane and its clients touch (core/v1, events.k8s.io,
//! coordination.k8s.io, apps/v1, apiextensions.k8s.io). Stored and served; nothing runs them yet.

use super::{Column, Resource, Scale, View};
use std::collections::BTreeMap;

struct Spec {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    selectable: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    Spec {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        status: true,
        selectable: &["status.phase"],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        status: true,
        selectable: &[
            "spec.nodeName",
            "status.phase",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        status: false,
        selectable: &[
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
        status: false,
        selectable: &[],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short: &[],
        status: false,
        selectable: &["type"],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
        status: true,
        selectable: &[],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short: &["pvc"],
        status: true,
        selectable: &[],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "persistentvolumes",
        kind: "PersistentVolume",
        namespaced: false,
        short: &["pv"],
        status: true,
        selectable: &[],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        status: true,
        selectable: &["spec.unschedulable"],
    },
    Spec {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short: &["sa"],
        status: false,
        selectable: &[],
    },
    Spec {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        status: false,
        selectable: &[
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
            "reason",
            "type",
        ],
    },
    Spec {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short: &[],
        status: false,
        selectable: &[],
    },
    Spec {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short: &["deploy"],
        status: true,
        selectable: &[],
    },
    Spec {
        group: "apps",
        version: "v1",
        plural: "controllerrevisions",
        kind: "ControllerRevision",
        namespaced: true,
        short: &[],
        status: false,
        selectable: &[],
    },
    Spec {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        short: &["ds"],
        status: true,
        selectable: &[],
    },
    Spec {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        short: &["crd", "crds"],
        status: true,
        selectable: &[],
    },
];

fn col(name: &str, type_: &str, path: &str) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        priority: 0,
        description: String::new(),
    }
}

fn columns(kind: &str) -> Vec<Column> {
    let age = col("Age", "date", ".metadata.creationTimestamp");
    match kind {
        "Namespace" => vec![col("Status", "string", ".status.phase"), age],
        "Pod" => vec![
            col("Status", "string", ".status.phase"),
            col("IP", "string", ".status.podIP"),
            col("Node", "string", ".spec.nodeName"),
            age,
        ],
        "ConfigMap" | "Secret" | "ServiceAccount" | "Lease" | "Node" => vec![age],
        "PersistentVolumeClaim" => vec![
            col("Status", "string", ".status.phase"),
            col("Volume", "string", ".spec.volumeName"),
            col("Capacity", "string", ".status.capacity.storage"),
            age,
        ],
        "Event" => vec![
            col("Type", "string", ".type"),
            col("Reason", "string", ".reason"),
            col("Message", "string", ".message"),
        ],
        "CustomResourceDefinition" => {
            vec![col("Created At", "date", ".metadata.creationTimestamp")]
        }
        _ => vec![age],
    }
}

pub(super) fn resources() -> Vec<Resource> {
    SPECS
        .iter()
        .map(|s| Resource {
            group: s.group.into(),
            versions: vec![s.version.into()],
            deprecated: BTreeMap::new(),
            plural: s.plural.into(),
            singular: s.kind.to_lowercase(),
            kind: s.kind.into(),
            namespaced: s.namespaced,
            short_names: s.short.iter().map(|x| x.to_string()).collect(),
            categories: if s.namespaced && s.group != "events.k8s.io" && s.kind != "Event" {
                vec!["all".into()]
            } else {
                vec![]
            },
            status: s.status,
            scale: (s.kind == "Deployment").then(|| Scale {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: None,
            }),
            columns: columns(s.kind),
            schemas: BTreeMap::new(),
            selectable_fields: s.selectable.iter().map(|x| x.to_string()).collect(),
            builtin: true,
            view: if s.group == "events.k8s.io" {
                View::EventsV1
            } else {
                View::Plain
            },
        })
        .collect()
}
