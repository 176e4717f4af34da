//! The reply to [`crate::Request::Stats`]: what the node agent exports as upstream's per-VMI
//! metrics (`kubevirt_vmi_vcpu_seconds_total`, `kubevirt_vmi_memory_resident_bytes`,
//! `kubevirt_vmi_network_*`, `kubevirt_vmi_storage_*`). Every counter counts from the
//! launcher's start and never goes down, across guest reboots.

use crate::{Client, ClientError, Request};
use serde::{Deserialize, Serialize};

/// The launcher's resource use and its devices' counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Each vCPU's time on a host CPU.
    #[serde(default)]
    pub vcpus: Vec<VcpuStats>,
    /// The launcher process's resident set size, in bytes (guest RAM it touched included).
    #[serde(default)]
    pub resident_bytes: u64,
    /// The guest memory the VM was given, in bytes.
    #[serde(default)]
    pub domain_memory_bytes: u64,
    /// Each virtio-net interface.
    #[serde(default)]
    pub interfaces: Vec<InterfaceStats>,
    /// Each virtio-blk disk.
    #[serde(default)]
    pub disks: Vec<DiskStats>,
}

/// One vCPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VcpuStats {
    /// The vCPU's index (`vcpu<id>`).
    pub id: u32,
    /// Seconds its threads ran on a host CPU (user and system time, all of its threads so
    /// far: a guest reboot starts new ones).
    pub cpu_seconds: f64,
}

/// One network interface, as the guest sees it: receive is towards the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    /// The VMI's interface name (`spec.domain.devices.interfaces[].name`).
    pub name: String,
    /// Bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Frames delivered to the guest.
    pub rx_packets: u64,
    /// Frames for the guest dropped (no guest buffer).
    pub rx_dropped: u64,
    /// Bytes the guest sent.
    pub tx_bytes: u64,
    /// Frames the guest sent.
    pub tx_packets: u64,
    /// Frames the guest sent that were dropped.
    pub tx_dropped: u64,
}

/// One disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskStats {
    /// The VMI's disk name (`spec.domain.devices.disks[].name`).
    pub name: String,
    /// Bytes the guest read.
    pub read_bytes: u64,
    /// Read requests.
    pub read_requests: u64,
    /// Bytes the guest wrote.
    pub write_bytes: u64,
    /// Write requests.
    pub write_requests: u64,
    /// Flush requests.
    pub flush_requests: u64,
}

impl Client {
    /// [`Request::Stats`].
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn stats(&self) -> Result<Stats, ClientError> {
        self.call(&Request::Stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_reply, encode_ok};

    #[test]
    fn stats_round_trip_and_an_empty_reply_reads_as_zero() {
        let s = Stats {
            vcpus: vec![VcpuStats {
                id: 1,
                cpu_seconds: 2.5,
            }],
            resident_bytes: 40 << 20,
            domain_memory_bytes: 64 << 20,
            interfaces: vec![InterfaceStats {
                name: "default".into(),
                rx_bytes: 10,
                tx_bytes: 20,
                ..Default::default()
            }],
            disks: vec![DiskStats {
                name: "root".into(),
                read_bytes: 512,
                read_requests: 1,
                ..Default::default()
            }],
        };
        assert_eq!(decode_reply::<Stats>(&encode_ok(&s)).unwrap(), s);
        let empty = r#"{"version":2,"ok":true}"#;
        assert_eq!(decode_reply::<Stats>(empty).unwrap(), Stats::default());
    }
}
