//! VirtualMachineInstance spec checks (upstream's `vmi-create-admitter` and its spec validators).
//! Shared by VMIs, VM templates and VMIRS templates.

use super::{
    FieldError, check_one_of, check_unique_name, is_dns1123_label, is_mac_address, set_fields,
};
use crate::core::v1::{
    CpuFeaturePolicy, Devices, Disk, DiskBus, DiskCache, DiskIo, DomainSpec, EvictionStrategy,
    Interface, InterfaceModel, InterfaceState, Network, VirtualMachineInstanceSpec, Volume,
};
use crate::path::FieldPath;
use crate::quantity::bytes_of;
use std::collections::{HashMap, HashSet};

/// Where a VMI spec gets its memory size from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemorySource {
    /// From the spec itself: memory must be requested.
    Required,
    /// Not yet: a VM template may leave it to an instancetype, and upstream checks the size only
    /// when the VMI is created.
    Deferred,
}

const CDROM_BUSES: &[&str] = &["sata", "scsi"];
const PROTOCOLS: &[&str] = &["TCP", "UDP"];

/// Validate a VMI spec found at `path`.
pub(crate) fn validate_vmi_spec(
    spec: &VirtualMachineInstanceSpec,
    path: &FieldPath,
    memory: MemorySource,
    errs: &mut Vec<FieldError>,
) {
    let domain_path = path.field("domain");
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let networks = spec.networks.as_deref().unwrap_or_default();
    let volume_names = validate_volumes(volumes, &path.field("volumes"), errs);
    let network_names = validate_networks(networks, &path.field("networks"), errs);
    let mut boot_orders = HashMap::new();
    validate_devices(
        &spec.domain.devices,
        &domain_path.field("devices"),
        &volume_names,
        &network_names,
        networks,
        &mut boot_orders,
        errs,
    );
    validate_domain(&spec.domain, &domain_path, memory, errs);
    check_one_of(
        spec.eviction_strategy.as_deref(),
        EvictionStrategy::VALUES,
        path.field("evictionStrategy"),
        errs,
    );
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(FieldError::invalid(
            path.field("terminationGracePeriodSeconds"),
            "must be 0 or more seconds",
        ));
    }
    if let Some(h) = spec.hostname.as_deref()
        && !is_dns1123_label(h)
    {
        errs.push(FieldError::invalid(path.field("hostname"), &format!("{h:?} is not a valid hostname: use lower-case letters, digits and '-', at most 63 characters")));
    }
}

fn validate_volumes<'a>(
    volumes: &'a [Volume],
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = path.index(i);
        check_unique_name(&v.name, &p, &mut names, "volume", errs);
        let sources = set_fields(v, &["name"]);
        match sources.len() {
            0 => errs.push(FieldError::required(p, "a volume needs exactly one source (containerDisk, persistentVolumeClaim, dataVolume, emptyDisk, cloudInitNoCloud, ...)")),
            1 => {}
            _ => errs.push(FieldError::forbidden(p, &format!("a volume has exactly one source, this one sets {}", sources.join(", ")))),
        }
        if let Some(cd) = &v.container_disk
            && cd.image.is_empty()
        {
            errs.push(FieldError::required(
                path.index(i).field("containerDisk").field("image"),
                "a containerDisk needs the image that holds the disk",
            ));
        }
    }
    names
}

fn validate_networks<'a>(
    networks: &'a [Network],
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    let mut pods = 0;
    for (i, n) in networks.iter().enumerate() {
        let p = path.index(i);
        check_unique_name(&n.name, &p, &mut names, "network", errs);
        let kinds = set_fields(n, &["name"]);
        if kinds.len() != 1 {
            errs.push(FieldError::invalid(
                p.clone(),
                "a network has exactly one of pod, multus or resourceClaim",
            ));
        }
        if n.pod.is_some() {
            pods += 1;
            if pods > 1 {
                errs.push(FieldError::forbidden(
                    p.field("pod"),
                    "only one network can be the pod network",
                ));
            }
        }
    }
    names
}

#[allow(clippy::too_many_arguments)]
fn validate_devices(
    devices: &Devices,
    path: &FieldPath,
    volumes: &HashSet<&str>,
    networks: &HashSet<&str>,
    network_list: &[Network],
    boot_orders: &mut HashMap<u64, FieldPath>,
    errs: &mut Vec<FieldError>,
) {
    let mut disk_names = HashSet::new();
    for (i, d) in devices
        .disks
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = path.field("disks").index(i);
        check_unique_name(&d.name, &p, &mut disk_names, "disk", errs);
        // A CD-ROM without a volume is an empty drive, filled later by hotplug.
        if !d.name.is_empty() && d.cdrom.is_none() && !volumes.contains(d.name.as_str()) {
            errs.push(FieldError::not_found(
                p.field("name"),
                &format!(
                    "disk {:?} has no volume of the same name; add it to spec.volumes",
                    d.name
                ),
            ));
        }
        validate_disk(d, &p, errs);
        check_boot_order(d.boot_order, p.field("bootOrder"), boot_orders, errs);
    }
    let mut iface_names = HashSet::new();
    for (i, iface) in devices
        .interfaces
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let p = path.field("interfaces").index(i);
        check_unique_name(&iface.name, &p, &mut iface_names, "interface", errs);
        if !iface.name.is_empty() && !networks.contains(iface.name.as_str()) {
            errs.push(FieldError::not_found(
                p.field("name"),
                &format!(
                    "interface {:?} has no network of the same name; add it to spec.networks",
                    iface.name
                ),
            ));
        }
        let network = network_list.iter().find(|n| n.name == iface.name);
        validate_interface(iface, network, &p, errs);
        check_boot_order(iface.boot_order, p.field("bootOrder"), boot_orders, errs);
    }
}

fn validate_disk(d: &Disk, p: &FieldPath, errs: &mut Vec<FieldError>) {
    let targets = [d.disk.is_some(), d.lun.is_some(), d.cdrom.is_some()]
        .iter()
        .filter(|t| **t)
        .count();
    if targets > 1 {
        errs.push(FieldError::forbidden(
            p.clone(),
            "a disk is exactly one of disk, lun or cdrom",
        ));
    }
    if let Some(t) = &d.disk {
        check_one_of(
            t.bus.as_deref(),
            DiskBus::VALUES,
            p.field("disk").field("bus"),
            errs,
        );
    }
    if let Some(t) = &d.lun {
        check_one_of(
            t.bus.as_deref(),
            DiskBus::VALUES,
            p.field("lun").field("bus"),
            errs,
        );
    }
    if let Some(t) = &d.cdrom {
        check_one_of(
            t.bus.as_deref(),
            CDROM_BUSES,
            p.field("cdrom").field("bus"),
            errs,
        );
        check_one_of(
            t.tray.as_deref(),
            &["open", "closed"],
            p.field("cdrom").field("tray"),
            errs,
        );
    }
    check_one_of(
        d.cache.as_deref(),
        DiskCache::VALUES,
        p.field("cache"),
        errs,
    );
    check_one_of(d.io.as_deref(), DiskIo::VALUES, p.field("io"), errs);
}

fn validate_interface(
    iface: &Interface,
    network: Option<&Network>,
    p: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    let bindings: Vec<_> = set_fields(iface, &[])
        .into_iter()
        .filter(|k| {
            [
                "bridge",
                "masquerade",
                "sriov",
                "passtBinding",
                "slirp",
                "macvtap",
                "passt",
                "binding",
            ]
            .contains(&k.as_str())
        })
        .collect();
    if bindings.len() > 1 {
        errs.push(FieldError::forbidden(
            p.clone(),
            &format!(
                "an interface has one binding method, this one sets {}",
                bindings.join(", ")
            ),
        ));
    }
    if iface.masquerade.is_some() && network.is_some_and(|n| n.pod.is_none()) {
        errs.push(FieldError::invalid(
            p.field("masquerade"),
            "masquerade binding works only on the pod network",
        ));
    }
    check_one_of(
        iface.model.as_deref(),
        InterfaceModel::VALUES,
        p.field("model"),
        errs,
    );
    check_one_of(
        iface.state.as_deref(),
        InterfaceState::VALUES,
        p.field("state"),
        errs,
    );
    if let Some(mac) = iface.mac_address.as_deref()
        && !is_mac_address(mac)
    {
        errs.push(FieldError::invalid(
            p.field("macAddress"),
            &format!("{mac:?} is not a MAC address like de:ad:00:00:be:af"),
        ));
    }
    for (i, port) in iface
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let pp = p.field("ports").index(i);
        if !(1..=65535).contains(&port.port) {
            errs.push(FieldError::invalid(
                pp.field("port"),
                &format!("port {} is out of range 1-65535", port.port),
            ));
        }
        check_one_of(
            port.protocol.as_deref(),
            PROTOCOLS,
            pp.field("protocol"),
            errs,
        );
    }
}

fn check_boot_order(
    order: Option<u64>,
    path: FieldPath,
    seen: &mut HashMap<u64, FieldPath>,
    errs: &mut Vec<FieldError>,
) {
    let Some(order) = order else { return };
    if order == 0 {
        errs.push(FieldError::invalid(path, "bootOrder must be 1 or more"));
    } else if let Some(first) = seen.get(&order) {
        errs.push(FieldError::duplicate(
            path,
            &format!("bootOrder {order} is already used by {first}; boot orders must be unique"),
        ));
    } else {
        seen.insert(order, path);
    }
}

fn validate_domain(
    domain: &DomainSpec,
    path: &FieldPath,
    memory: MemorySource,
    errs: &mut Vec<FieldError>,
) {
    let requests = domain.resources.as_ref().and_then(|r| r.requests.as_ref());
    let limits = domain.resources.as_ref().and_then(|r| r.limits.as_ref());
    let guest = domain.memory.as_ref().and_then(|m| m.guest.as_ref());
    let request_mem = requests.and_then(|r| r.get("memory"));
    let limit_mem = limits.and_then(|l| l.get("memory"));
    if memory == MemorySource::Required
        && guest.is_none()
        && request_mem.is_none()
        && limit_mem.is_none()
    {
        errs.push(FieldError::required(
            path.field("memory").field("guest"),
            "memory must be requested: set domain.memory.guest or domain.resources.requests.memory",
        ));
    }
    let mut sized = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
                     p: FieldPath|
     -> Option<u64> {
        let q = q?;
        match bytes_of(q) {
            Ok(0) => {
                errs.push(FieldError::invalid(p, "memory must be more than 0"));
                None
            }
            Ok(b) => Some(b),
            Err(e) => {
                errs.push(FieldError::invalid(p, &e.to_string()));
                None
            }
        }
    };
    let guest_b = sized(guest, path.field("memory").field("guest"));
    let req_b = sized(
        request_mem,
        path.field("resources").field("requests").key("memory"),
    );
    let lim_b = sized(
        limit_mem,
        path.field("resources").field("limits").key("memory"),
    );
    if let (Some(r), Some(l)) = (req_b, lim_b)
        && r > l
    {
        errs.push(FieldError::invalid(
            path.field("resources").field("requests").key("memory"),
            "the memory request must not exceed the memory limit",
        ));
    }
    if let (Some(g), Some(l)) = (guest_b, lim_b)
        && g > l
    {
        errs.push(FieldError::invalid(
            path.field("memory").field("guest"),
            "guest memory must not exceed the memory limit",
        ));
    }
    if let Some(cpu) = &domain.cpu {
        let cp = path.field("cpu");
        for (name, v) in [
            ("cores", cpu.cores),
            ("sockets", cpu.sockets),
            ("threads", cpu.threads),
        ] {
            if v == Some(0) {
                errs.push(FieldError::invalid(
                    cp.field(name),
                    &format!("{name} must be 1 or more"),
                ));
            }
        }
        let mut seen = HashSet::new();
        for (i, f) in cpu
            .features
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let fp = cp.field("features").index(i);
            check_unique_name(&f.name, &fp, &mut seen, "CPU feature", errs);
            check_one_of(
                f.policy.as_deref(),
                CpuFeaturePolicy::VALUES,
                fp.field("policy"),
                errs,
            );
        }
    }
    if let Some(kb) = domain
        .firmware
        .as_ref()
        .and_then(|f| f.kernel_boot.as_ref())
    {
        let kp = path.field("firmware").field("kernelBoot");
        match &kb.container {
            None if kb.kernel_args.is_some() => {
                errs.push(FieldError::required(
                    kp.field("container"),
                    "kernelArgs need a kernel: set kernelBoot.container",
                ));
            }
            Some(c) => {
                if c.image.is_empty() {
                    errs.push(FieldError::required(
                        kp.field("container").field("image"),
                        "the container image holding the kernel is required",
                    ));
                }
                if c.kernel_path.is_none() && c.initrd_path.is_none() {
                    errs.push(FieldError::required(
                        kp.field("container").field("kernelPath"),
                        "set kernelPath, initrdPath or both",
                    ));
                }
            }
            None => {}
        }
    }
}
