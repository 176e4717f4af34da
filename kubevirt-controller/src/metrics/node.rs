//! The node agent's metrics (upstream's virt-handler): per VMI running on this node, what its
//! launcher answers to the `stats` request — each vCPU's CPU time, the launcher's resident
//! set, the guest memory, the NICs' and disks' byte, packet and request counters. The
//! launchers are asked at scrape time, one at a time on the blocking pool, each with a short
//! timeout: a launcher that does not answer leaves only its own series out.

use super::exposition::{Family, Kind};
use crate::node::{AgentMode, NodeConfig};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_launcher_protocol::Stats;
use std::path::PathBuf;
use std::time::Duration;

/// How long one launcher may take to answer a scrape's `stats`.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// One VMI's identity in its series: node, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmiKey {
    /// The node.
    pub node: String,
    /// The VMI's namespace.
    pub namespace: String,
    /// The VMI's name.
    pub name: String,
}

/// The per-VMI families, from each VMI's launcher stats.
pub fn families(stats: &[(VmiKey, Stats)]) -> Vec<Family> {
    let mut rss = Family::new(
        "kubevirt_vmi_memory_resident_bytes",
        "Resident set size of the process running the domain.",
        Kind::Gauge,
    );
    let mut domain = Family::new(
        "kubevirt_vmi_memory_domain_bytes",
        "The amount of memory in bytes allocated to the domain. The `memory` value in domain xml file.",
        Kind::Gauge,
    );
    let mut vcpu = Family::new(
        "kubevirt_vmi_vcpu_seconds_total",
        "Total amount of time spent in each state by each vcpu (cpu_time excluding hypervisor time). Where `id` is the vcpu identifier and `state` can be one of the following: [`OFFLINE`, `RUNNING`, `BLOCKED`].",
        Kind::Counter,
    );
    let net = |name, help| Family::new(name, help, Kind::Counter);
    let mut rx_bytes = net(
        "kubevirt_vmi_network_receive_bytes_total",
        "Total network traffic received in bytes.",
    );
    let mut tx_bytes = net(
        "kubevirt_vmi_network_transmit_bytes_total",
        "Total network traffic transmitted in bytes.",
    );
    let mut rx_packets = net(
        "kubevirt_vmi_network_receive_packets_total",
        "Total network traffic received packets.",
    );
    let mut tx_packets = net(
        "kubevirt_vmi_network_transmit_packets_total",
        "Total network traffic transmitted packets.",
    );
    let mut rx_dropped = net(
        "kubevirt_vmi_network_receive_packets_dropped_total",
        "The total number of rx packets dropped on vNIC interfaces.",
    );
    let mut tx_dropped = net(
        "kubevirt_vmi_network_transmit_packets_dropped_total",
        "The total number of tx packets dropped on vNIC interfaces.",
    );
    let mut read_bytes = net(
        "kubevirt_vmi_storage_read_traffic_bytes_total",
        "Total number of bytes read from storage.",
    );
    let mut write_bytes = net(
        "kubevirt_vmi_storage_write_traffic_bytes_total",
        "Total number of written bytes.",
    );
    let mut read_ops = net(
        "kubevirt_vmi_storage_iops_read_total",
        "Total number of I/O read operations.",
    );
    let mut write_ops = net(
        "kubevirt_vmi_storage_iops_write_total",
        "Total number of I/O write operations.",
    );
    let mut flushes = net(
        "kubevirt_vmi_storage_flush_requests_total",
        "Total storage flush requests.",
    );
    for (key, s) in stats {
        let base = [
            ("node", key.node.as_str()),
            ("namespace", key.namespace.as_str()),
            ("name", key.name.as_str()),
        ];
        rss.push(&base, s.resident_bytes as f64);
        domain.push(&base, s.domain_memory_bytes as f64);
        for v in &s.vcpus {
            let id = v.id.to_string();
            vcpu.push(
                &with(&base, &[("id", &id), ("state", "running")]),
                v.cpu_seconds,
            );
        }
        for i in &s.interfaces {
            let l = with(&base, &[("interface", &i.name)]);
            rx_bytes.push(&l, i.rx_bytes as f64);
            tx_bytes.push(&l, i.tx_bytes as f64);
            rx_packets.push(&l, i.rx_packets as f64);
            tx_packets.push(&l, i.tx_packets as f64);
            rx_dropped.push(&l, i.rx_dropped as f64);
            tx_dropped.push(&l, i.tx_dropped as f64);
        }
        for d in &s.disks {
            let l = with(&base, &[("drive", &d.name)]);
            read_bytes.push(&l, d.read_bytes as f64);
            write_bytes.push(&l, d.write_bytes as f64);
            read_ops.push(&l, d.read_requests as f64);
            write_ops.push(&l, d.write_requests as f64);
            flushes.push(&l, d.flush_requests as f64);
        }
    }
    vec![
        rss,
        domain,
        vcpu,
        rx_bytes,
        tx_bytes,
        rx_packets,
        tx_packets,
        rx_dropped,
        tx_dropped,
        read_bytes,
        write_bytes,
        read_ops,
        write_ops,
        flushes,
    ]
}

/// `base` and then `extra`.
fn with<'a>(
    base: &[(&'static str, &'a str)],
    extra: &[(&'static str, &'a str)],
) -> Vec<(&'static str, &'a str)> {
    let mut l = base.to_vec();
    l.extend_from_slice(extra);
    l
}

/// The run directory of `vmi`'s launcher in `mode`.
fn run_dir(vmi: &VirtualMachineInstance, config: &NodeConfig, mode: &AgentMode) -> PathBuf {
    match mode {
        AgentMode::Direct => crate::node::agent::run_dir(vmi, config),
        AgentMode::Pods { .. } => {
            crate::node::pod::run_dir(&config.run_root, &vmi.uid().unwrap_or_default())
        }
    }
}

/// Asks the launcher of every Running VMI on this node for its stats.
pub async fn collect(client: Client, config: NodeConfig, mode: AgentMode) -> Vec<Family> {
    let vmis = match Api::<VirtualMachineInstance>::all(client)
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(error) => {
            tracing::warn!(error = %error, "metrics: listing VMIs failed");
            Vec::new()
        }
    };
    let mut stats = Vec::new();
    for vmi in vmis {
        let on_node = vmi.status.as_ref().and_then(|s| s.node_name.as_deref())
            == Some(config.node_name.as_str());
        if !on_node || crate::vm::instance::phase(&vmi) != "Running" {
            continue;
        }
        let dir = run_dir(&vmi, &config, &mode);
        let asked = tokio::task::spawn_blocking(move || {
            kubevirt_launcher_protocol::Client::for_run_dir(&dir)
                .with_timeout(STATS_TIMEOUT)
                .stats()
        })
        .await;
        let key = VmiKey {
            node: config.node_name.clone(),
            namespace: vmi.namespace().unwrap_or_default(),
            name: vmi.name_any(),
        };
        match asked {
            Ok(Ok(s)) => stats.push((key, s)),
            Ok(Err(error)) => {
                tracing::debug!(namespace = %key.namespace, vmi = %key.name, error = %error, "metrics: no stats from the launcher");
            }
            Err(_) => {}
        }
    }
    families(&stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::render;
    use kubevirt_launcher_protocol::{DiskStats, InterfaceStats, VcpuStats};

    #[test]
    fn each_vmi_has_its_series_with_node_namespace_name() {
        let key = VmiKey {
            node: "n1".into(),
            namespace: "default".into(),
            name: "demo".into(),
        };
        let stats = Stats {
            vcpus: vec![VcpuStats {
                id: 0,
                cpu_seconds: 1.5,
            }],
            resident_bytes: 1000,
            domain_memory_bytes: 2000,
            interfaces: vec![InterfaceStats {
                name: "default".into(),
                rx_bytes: 7,
                tx_bytes: 9,
                ..Default::default()
            }],
            disks: vec![DiskStats {
                name: "root".into(),
                read_bytes: 4096,
                read_requests: 2,
                ..Default::default()
            }],
        };
        let text = render(&families(&[(key, stats)]));
        let who = "node=\"n1\",namespace=\"default\",name=\"demo\"";
        for line in [
            format!("kubevirt_vmi_memory_resident_bytes{{{who}}} 1000\n"),
            format!("kubevirt_vmi_vcpu_seconds_total{{{who},id=\"0\",state=\"running\"}} 1.5\n"),
            format!("kubevirt_vmi_network_receive_bytes_total{{{who},interface=\"default\"}} 7\n"),
            format!("kubevirt_vmi_network_transmit_bytes_total{{{who},interface=\"default\"}} 9\n"),
            format!("kubevirt_vmi_storage_read_traffic_bytes_total{{{who},drive=\"root\"}} 4096\n"),
            format!("kubevirt_vmi_storage_iops_read_total{{{who},drive=\"root\"}} 2\n"),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("# TYPE kubevirt_vmi_vcpu_seconds_total counter\n"));
    }
}
