//! `virtctl expose vm|vmi|vmirs NAME --name SVC --port P`: a Service selecting the VM's pods'
//! labels (the VM template's, the VMI's, or the replica set's selector), created client-side as
//! upstream's virtctl does.

use std::collections::BTreeMap;

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kubevirt_api::core::v1::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceReplicaSet,
};

use super::VirtctlError;
use super::connect::Connection;

/// What is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExposeKind {
    /// A VirtualMachine (its template's labels).
    #[value(name = "vm", alias = "virtualmachine")]
    Vm,
    /// A VirtualMachineInstance (its labels).
    #[value(name = "vmi", alias = "virtualmachineinstance")]
    Vmi,
    /// A VirtualMachineInstanceReplicaSet (its selector's labels).
    #[value(name = "vmirs", alias = "virtualmachineinstancereplicaset")]
    Vmirs,
}

/// `expose`'s flags, as upstream spells them.
#[derive(Debug, Args)]
pub struct ExposeFlags {
    /// What to expose.
    pub kind: ExposeKind,
    /// Its name.
    pub name: String,
    /// Name of the service created for the exposure of the VM.
    #[arg(long = "name", id = "service_name")]
    pub service_name: String,
    /// The port that the service should serve on.
    #[arg(long)]
    pub port: i32,
    /// Name or number for the port on the VM that the service should direct traffic to.
    #[arg(long)]
    pub target_port: Option<String>,
    /// The network protocol for the service to be created.
    #[arg(long, default_value = "TCP")]
    pub protocol: String,
    /// Type for this service: ClusterIP, NodePort, or LoadBalancer.
    #[arg(long = "type", default_value = "ClusterIP")]
    pub service_type: String,
    /// Name of the port.
    #[arg(long)]
    pub port_name: Option<String>,
}

/// Creates the Service.
pub async fn run(c: &Connection, f: &ExposeFlags) -> Result<(), VirtctlError> {
    if !matches!(
        f.service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        return Err(VirtctlError::Usage(format!(
            "--type: unknown service type {:?} (ClusterIP, NodePort, LoadBalancer)",
            f.service_type
        )));
    }
    if !matches!(f.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
        return Err(VirtctlError::Usage(format!(
            "--protocol: unknown protocol {:?} (TCP, UDP, SCTP)",
            f.protocol
        )));
    }
    let ns = c.namespace.as_str();
    let (kind, labels) = match f.kind {
        ExposeKind::Vm => {
            let vm = Api::<VirtualMachine>::namespaced(c.client.clone(), ns)
                .get(&f.name)
                .await
                .map_err(VirtctlError::from_kube)?;
            let labels = vm.spec.template.metadata.and_then(|m| m.labels);
            ("VirtualMachine", labels)
        }
        ExposeKind::Vmi => {
            let vmi = Api::<VirtualMachineInstance>::namespaced(c.client.clone(), ns)
                .get(&f.name)
                .await
                .map_err(VirtctlError::from_kube)?;
            ("VirtualMachineInstance", vmi.metadata.labels)
        }
        ExposeKind::Vmirs => {
            let rs = Api::<VirtualMachineInstanceReplicaSet>::namespaced(c.client.clone(), ns)
                .get(&f.name)
                .await
                .map_err(VirtctlError::from_kube)?;
            (
                "VirtualMachineInstanceReplicaSet",
                rs.spec.selector.match_labels,
            )
        }
    };
    let selector: BTreeMap<String, String> = labels.unwrap_or_default();
    if selector.is_empty() {
        return Err(VirtctlError::Failed(format!(
            "cannot expose {kind} without any label: {}",
            f.name
        )));
    }
    let target_port = match &f.target_port {
        None => IntOrString::Int(f.port),
        Some(t) => match t.parse::<i32>() {
            Ok(n) => IntOrString::Int(n),
            Err(_) => IntOrString::String(t.clone()),
        },
    };
    let service = Service {
        metadata: ObjectMeta {
            name: Some(f.service_name.clone()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            type_: Some(f.service_type.clone()),
            ports: Some(vec![ServicePort {
                name: f.port_name.clone(),
                port: f.port,
                protocol: Some(f.protocol.clone()),
                target_port: Some(target_port),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Service>::namespaced(c.client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .map_err(VirtctlError::from_kube)?;
    println!(
        "Service {} successfully exposed for {} {}",
        f.service_name,
        match f.kind {
            ExposeKind::Vm => "vm",
            ExposeKind::Vmi => "vmi",
            ExposeKind::Vmirs => "vmirs",
        },
        f.name
    );
    Ok(())
}
