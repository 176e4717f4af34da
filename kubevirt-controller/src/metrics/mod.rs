//! Prometheus `/metrics` of the long-running components, with upstream KubeVirt's metric
//! names, types, HELP texts and labels: `run` (the controller: [`cluster`]), `node` (the node
//! agent: [`node`], from each launcher's `stats`) and `operator` ([`operator`]), each on
//! `--metrics-listen ADDR` ([`serve`]: plain HTTP, or HTTPS with a certificate and key as
//! upstream serves them). The text format is [`exposition`]'s.

pub mod cluster;
pub mod exposition;
pub mod node;
pub mod operator;
pub mod serve;

pub use self::exposition::{Family, Kind};
pub use self::serve::{Collect, spawn};

use std::sync::Arc;

/// The controller's [`Collect`].
pub fn controller(client: kube::Client) -> Collect {
    Arc::new(move || Box::pin(cluster::collect(client.clone())))
}

/// The node agent's [`Collect`].
pub fn node_agent(
    client: kube::Client,
    config: crate::node::NodeConfig,
    mode: crate::node::AgentMode,
) -> Collect {
    Arc::new(move || Box::pin(node::collect(client.clone(), config.clone(), mode.clone())))
}

/// The operator's [`Collect`].
pub fn operator(client: kube::Client, namespace: String, identity: String) -> Collect {
    Arc::new(move || {
        Box::pin(operator::collect(
            client.clone(),
            namespace.clone(),
            identity.clone(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's metric names (kubevirt/monitoring `docs/metrics.md`, the kubevirt rows) that
    /// these components export.
    const UPSTREAM: &[&str] = &[
        "kubevirt_virt_controller_leading_status",
        "kubevirt_virt_controller_ready_status",
        "kubevirt_virt_operator_leading_status",
        "kubevirt_virt_operator_ready_status",
        "kubevirt_vm_resource_requests",
        "kubevirt_vmi_phase_count",
        "kubevirt_vmi_memory_resident_bytes",
        "kubevirt_vmi_memory_domain_bytes",
        "kubevirt_vmi_vcpu_seconds_total",
        "kubevirt_vmi_network_receive_bytes_total",
        "kubevirt_vmi_network_transmit_bytes_total",
        "kubevirt_vmi_network_receive_packets_total",
        "kubevirt_vmi_network_transmit_packets_total",
        "kubevirt_vmi_network_receive_packets_dropped_total",
        "kubevirt_vmi_network_transmit_packets_dropped_total",
        "kubevirt_vmi_storage_read_traffic_bytes_total",
        "kubevirt_vmi_storage_write_traffic_bytes_total",
        "kubevirt_vmi_storage_iops_read_total",
        "kubevirt_vmi_storage_iops_write_total",
        "kubevirt_vmi_storage_flush_requests_total",
    ];

    #[test]
    fn every_exported_name_is_upstreams_and_counters_end_in_total() {
        let mut families = cluster::controller_status();
        families.push(cluster::phase_count(&[]));
        families.push(cluster::resource_requests(&[]));
        families.extend(node::families(&[]));
        families.extend(operator::status(true, true));
        let names: Vec<&str> = families.iter().map(|f| f.name).collect();
        for name in &names {
            assert!(UPSTREAM.contains(name), "{name} is not one of upstream's");
        }
        for f in &families {
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
        assert_eq!(
            names.len(),
            UPSTREAM.len(),
            "every upstream name is exported"
        );
    }
}
