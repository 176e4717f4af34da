//! VMI spec defaults (upstream's `vmi-mutator` and `SetDefaults_*`).

use super::ClusterDefaults;
use crate::core::v1::{
    CPU, Disk, DiskTarget, Firmware, Interface, InterfaceBridge, InterfaceMasquerade, Machine,
    Memory, Network, PodNetwork, ResourceRequirements, VirtualMachineInstanceSpec,
};
use crate::quantity::Quantity;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

/// Namespace for firmware UUIDs derived from an object key (a fixed, project-specific UUID).
const FIRMWARE_UUID_NAMESPACE: uuid::Uuid = uuid::uuid!("6a1a24a1-4061-4607-8bf4-a3963d0c5895");

/// The memory request for `guest` under `percent` overcommit: guest × 100 / percent bytes,
/// written as Go's BinarySI does (the largest binary suffix that divides it, else bytes); the
/// guest size itself at 100 % (or when it is no byte quantity).
fn overcommitted(guest: &K8sQuantity, percent: u32) -> K8sQuantity {
    if percent == 100 || percent == 0 {
        return guest.clone();
    }
    let Ok(bytes) = crate::quantity::bytes_of(guest) else {
        return guest.clone();
    };
    let value = u128::from(bytes) * 100 / u128::from(percent);
    let mut text = format!("{value}");
    for (i, suffix) in ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
        .iter()
        .enumerate()
        .rev()
    {
        let unit = 1u128 << (10 * (i + 1));
        if value != 0 && value % unit == 0 {
            text = format!("{}{suffix}", value / unit);
            break;
        }
    }
    K8sQuantity(text)
}

/// Fill in what upstream's webhook fills in a VMI spec. `key` (`namespace/name`) seeds the
/// firmware UUID.
pub fn default_vmi_spec(
    spec: &mut VirtualMachineInstanceSpec,
    key: &str,
    cluster: &ClusterDefaults,
) {
    spec.architecture
        .get_or_insert_with(|| cluster.architecture.clone());
    spec.termination_grace_period_seconds
        .get_or_insert(cluster.termination_grace_period_seconds);
    let domain = &mut spec.domain;
    domain
        .machine
        .get_or_insert_with(Machine::default)
        .type_
        .get_or_insert_with(|| cluster.machine_type.clone());
    let firmware = domain.firmware.get_or_insert_with(Firmware::default);
    firmware.uuid.get_or_insert_with(|| {
        uuid::Uuid::new_v5(&FIRMWARE_UUID_NAMESPACE, key.as_bytes()).to_string()
    });

    // Memory: the guest sees what was requested; a request follows the guest size, divided by
    // the cluster's memoryOvercommit (upstream's vmi-mutator `setDefaultResourceRequests`).
    let resources = domain
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    let request = resources
        .requests
        .as_ref()
        .and_then(|r| r.get("memory"))
        .cloned();
    let memory = domain.memory.get_or_insert_with(Memory::default);
    match (&memory.guest, request) {
        (None, Some(req)) => memory.guest = Some(req),
        (Some(guest), None) => {
            resources
                .requests
                .get_or_insert_with(Default::default)
                .insert(
                    "memory".into(),
                    overcommitted(guest, cluster.memory_overcommit),
                );
        }
        _ => {}
    }
    if domain
        .memory
        .as_ref()
        .is_some_and(|m| *m == Memory::default())
    {
        domain.memory = None;
    }

    // CPU topology: one core and thread per socket; sockets from the CPU request or limit.
    let cpu_quantity = resources
        .limits
        .as_ref()
        .and_then(|l| l.get("cpu"))
        .or_else(|| resources.requests.as_ref().and_then(|r| r.get("cpu")));
    let sockets_from_cpu = cpu_quantity
        .and_then(|q| Quantity::parse(&q.0).ok())
        .and_then(|q| q.ceil_i128())
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0);
    if resources.requests.as_ref().is_none_or(|r| r.is_empty())
        && resources.limits.as_ref().is_none_or(|l| l.is_empty())
        && resources.overcommit_guest_overhead.is_none()
    {
        domain.resources = None;
    }
    let cpu = domain.cpu.get_or_insert_with(CPU::default);
    if cpu.cores.is_none() && cpu.sockets.is_none() && cpu.threads.is_none() {
        cpu.sockets = Some(sockets_from_cpu.unwrap_or(1));
    }
    cpu.cores.get_or_insert(1);
    cpu.threads.get_or_insert(1);
    cpu.sockets.get_or_insert(1);
    cpu.model.get_or_insert_with(|| cluster.cpu_model.clone());

    // Every volume without a disk or filesystem of its name gets a disk.
    let attached: std::collections::HashSet<String> = domain
        .devices
        .disks
        .iter()
        .flatten()
        .map(|d| d.name.clone())
        .chain(
            domain
                .devices
                .filesystems
                .iter()
                .flatten()
                .map(|f| f.name.clone()),
        )
        .collect();
    for v in spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| !attached.contains(&v.name))
    {
        domain
            .devices
            .disks
            .get_or_insert_with(Vec::new)
            .push(Disk {
                name: v.name.clone(),
                ..Default::default()
            });
    }
    // Disks: a plain disk unless told otherwise; virtio for disks, sata for CD-ROMs, scsi for LUNs.
    for disk in domain.devices.disks.iter_mut().flatten() {
        if disk.disk.is_none() && disk.lun.is_none() && disk.cdrom.is_none() {
            disk.disk = Some(DiskTarget::default());
        }
        if let Some(t) = &mut disk.disk {
            t.bus.get_or_insert_with(|| "virtio".into());
        }
        if let Some(t) = &mut disk.cdrom {
            t.bus.get_or_insert_with(|| "sata".into());
            t.readonly.get_or_insert(true);
            t.tray.get_or_insert_with(|| "closed".into());
        }
        if let Some(t) = &mut disk.lun {
            t.bus.get_or_insert_with(|| "scsi".into());
        }
    }
    if let Some(w) = domain
        .devices
        .watchdog
        .as_mut()
        .and_then(|w| w.i6300esb.as_mut())
    {
        w.action.get_or_insert_with(|| "reset".into());
    }

    // Network: the pod network is attached unless the VMI says otherwise.
    let autoattach = domain.devices.autoattach_pod_interface != Some(false);
    let no_networks = spec.networks.as_ref().is_none_or(Vec::is_empty);
    let no_interfaces = domain.devices.interfaces.as_ref().is_none_or(Vec::is_empty);
    if autoattach && no_networks && no_interfaces {
        spec.networks = Some(vec![Network {
            name: "default".into(),
            pod: Some(PodNetwork::default()),
            ..Default::default()
        }]);
        let mut iface = Interface {
            name: "default".into(),
            ..Default::default()
        };
        if cluster.default_network_interface == "masquerade" {
            iface.masquerade = Some(InterfaceMasquerade {});
        } else {
            iface.bridge = Some(InterfaceBridge {});
        }
        domain.devices.interfaces = Some(vec![iface]);
    }
    for iface in domain.devices.interfaces.iter_mut().flatten() {
        iface.model.get_or_insert_with(|| "virtio".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(guest: &str, request: Option<&str>, percent: u32) -> (String, String) {
        let mut spec = VirtualMachineInstanceSpec::default();
        spec.domain.memory = Some(Memory {
            guest: Some(K8sQuantity(guest.into())),
            ..Default::default()
        });
        if let Some(r) = request {
            spec.domain.resources = Some(ResourceRequirements {
                requests: Some([("memory".to_string(), K8sQuantity(r.into()))].into()),
                ..Default::default()
            });
        }
        let cluster = ClusterDefaults {
            memory_overcommit: percent,
            ..ClusterDefaults::kubevirt_rs()
        };
        default_vmi_spec(&mut spec, "ns/vmi", &cluster);
        let d = &spec.domain;
        (
            d.memory.as_ref().unwrap().guest.as_ref().unwrap().0.clone(),
            d.resources.as_ref().unwrap().requests.as_ref().unwrap()["memory"]
                .0
                .clone(),
        )
    }

    #[test]
    fn memory_overcommit_divides_the_defaulted_request_only() {
        let req = |g, p| requested(g, None, p).1;
        assert_eq!(req("96Mi", 100), "96Mi");
        assert_eq!(req("96Mi", 150), "64Mi");
        assert_eq!(req("96Mi", 200), "48Mi");
        assert_eq!(req("1Gi", 150), "715827882", "bytes when no suffix divides");
        assert_eq!(req("2G", 200), "1000000000");
        assert_eq!(
            requested("96Mi", None, 150).0,
            "96Mi",
            "the guest keeps its size"
        );
        // A request the VMI names is its own, whatever the overcommit.
        assert_eq!(requested("96Mi", Some("80Mi"), 150).1, "80Mi");
        assert_eq!(ClusterDefaults::default().memory_overcommit, 100);
    }
}
