//! The memory a VMI's launcher pod needs beyond the guest's own, computed like upstream's
//! `GetMemoryOverhead` (a fixed part, a part per vCPU, the guest's page tables, a part per
//! device), with our launcher's numbers instead of QEMU's, libvirt's and virtlogd's.
//!
//! What was measured: `scripts/launcher-footprint.sh` (docs/PERFORMANCE.md, "kubevirt-launcher",
//! 2026-11-28) boots `examples/vmi-demo.yaml` (1 vCPU, 64 MiB, an emptyDisk and a cloud-init disk
//! on virtio-blk, virtio-rng, a kernel from an OCI layout) and reads the peak RSS of the whole
//! launcher process with `/usr/bin/time`: median **8.3 MiB**, **8.5 MiB** with the pod network
//! (bridge, nftables NAT, DHCP, virtio-net). The demo guest touches under 1 MiB of its RAM, so
//! that is the launcher's own footprint with one vCPU and three devices. From it:
//!
//! - [`FIXED`] 24 MiB: the measured 8.5 MiB less the per-vCPU and per-device parts below, kept
//!   at about 2.5x for what the measurement does not see but the pod's memory cgroup charges: an
//!   OCI pull's buffers and the page cache of the layers it unpacks (kernelBoot containers and
//!   containerDisks are pulled inside the pod this session), the console log's page cache, and
//!   the kernel's KVM structures (memslots, the irqchip) charged to the process.
//! - [`PER_VCPU`] 2 MiB: a vCPU is one thread with the standard 2 MiB stack reserve (counted in
//!   full, so a deep stack is never what runs the pod out of memory) plus its `kvm_run` page and
//!   the kernel's vCPU state; not measured separately (the demo has one vCPU).
//! - guest page tables, `guest memory / 512` (upstream's rule: the EPT/NPT and the host's page
//!   tables for the guest mapping, 8 bytes per 4 KiB page each).
//! - [`PER_DEVICE`] 1 MiB per disk and interface: a virtio device's queues and its request buffers
//!   (block requests are served in chunks of up to 1 MiB); an estimate, inside the measured total.
//!
//! Upstream sizes a launcher pod at 240 MiB and more of overhead; ours is about 30 MiB for the
//! demo VMI.

use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_api::quantity::bytes_of;

const MIB: u64 = 1 << 20;
/// The launcher's fixed part (see the module documentation).
pub const FIXED: u64 = 24 * MIB;
/// The part per vCPU.
pub const PER_VCPU: u64 = 2 * MIB;
/// The part per disk and per interface.
pub const PER_DEVICE: u64 = MIB;
/// Guest memory per byte of page tables.
pub const PAGE_TABLE_RATIO: u64 = 512;

/// Why a VMI's memory cannot be sized.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OverheadError {
    /// The VMI names no guest memory.
    #[error(
        "spec.domain.memory.guest: the VMI names no memory (set domain.memory.guest or domain.resources.requests.memory)"
    )]
    NoMemory,
    /// A memory quantity is not a size.
    #[error("{path}: {message}")]
    Quantity {
        /// The field path.
        path: &'static str,
        /// Why.
        message: String,
    },
}

/// The guest's memory in bytes: `domain.memory.guest`, else `domain.resources.requests.memory`
/// (what the launcher gives the guest).
pub fn guest_memory(vmi: &VirtualMachineInstance) -> Result<u64, OverheadError> {
    let d = &vmi.spec.domain;
    let (path, q) = if let Some(g) = d.memory.as_ref().and_then(|m| m.guest.as_ref()) {
        ("spec.domain.memory.guest", g)
    } else if let Some(r) = d
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("memory"))
    {
        ("spec.domain.resources.requests.memory", r)
    } else {
        return Err(OverheadError::NoMemory);
    };
    bytes_of(q).map_err(|e| OverheadError::Quantity {
        path,
        message: e.to_string(),
    })
}

/// The guest's vCPUs: sockets × cores × threads (each 1 when unset), as the launcher lays out.
pub fn vcpus(vmi: &VirtualMachineInstance) -> u64 {
    let c = vmi.spec.domain.cpu.as_ref();
    let n = |v: Option<u32>| u64::from(v.unwrap_or(1).max(1));
    n(c.and_then(|c| c.sockets)) * n(c.and_then(|c| c.cores)) * n(c.and_then(|c| c.threads))
}

/// The launcher's memory beyond `guest` bytes of guest memory, rounded up to whole MiB.
pub fn memory_overhead(vmi: &VirtualMachineInstance, guest: u64) -> u64 {
    let devices = vmi.spec.domain.devices.disks.as_ref().map_or(0, Vec::len)
        + vmi
            .spec
            .domain
            .devices
            .interfaces
            .as_ref()
            .map_or(0, Vec::len);
    let total = FIXED
        + PER_VCPU * vcpus(vmi)
        + guest.div_ceil(PAGE_TABLE_RATIO)
        + PER_DEVICE * devices as u64;
    total.div_ceil(MIB) * MIB
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(domain: serde_json::Value) -> VirtualMachineInstance {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v", "namespace": "ns", "uid": "u"},
            "spec": {"domain": domain},
        }))
        .unwrap()
    }

    #[test]
    fn the_demo_vmi_costs_about_thirty_mib() {
        let v = vmi(json!({"memory": {"guest": "64Mi"}, "devices": {
            "disks": [{"name": "a"}, {"name": "b"}], "interfaces": [{"name": "default"}]}}));
        let guest = guest_memory(&v).unwrap();
        assert_eq!(guest, 64 * MIB);
        // 24 fixed + 2 (1 vCPU) + 0.125 (page tables) + 3 devices, rounded up.
        assert_eq!(memory_overhead(&v, guest), 30 * MIB);
    }

    #[test]
    fn vcpus_and_page_tables_grow_it() {
        let v = vmi(json!({"cpu": {"sockets": 2, "cores": 2, "threads": 1},
            "memory": {"guest": "4Gi"}, "devices": {}}));
        assert_eq!(vcpus(&v), 4);
        let guest = guest_memory(&v).unwrap();
        // 24 + 4 × 2 + 4 GiB / 512 (8 MiB).
        assert_eq!(memory_overhead(&v, guest), 40 * MIB);
    }

    #[test]
    fn memory_comes_from_the_request_when_guest_is_unset() {
        let v = vmi(json!({"resources": {"requests": {"memory": "128Mi"}}, "devices": {}}));
        assert_eq!(guest_memory(&v).unwrap(), 128 * MIB);
        assert_eq!(
            guest_memory(&vmi(json!({"devices": {}}))),
            Err(OverheadError::NoMemory)
        );
        let bad = vmi(json!({"memory": {"guest": "lots"}, "devices": {}}));
        let e = guest_memory(&bad).unwrap_err().to_string();
        assert!(e.starts_with("spec.domain.memory.guest: "), "{e}");
    }
}
