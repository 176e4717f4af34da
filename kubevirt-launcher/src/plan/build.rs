//! Building a [`LaunchPlan`] from a VMI (or a VM's template).

use super::supported::{NOT_WHEN_TRUE, unsupported};
use super::{
    CacheMode, CpuTopology, DiskPlan, DiskSource, KernelBoot, LaunchPlan, NetworkPlan, PlanError,
    PlanErrors,
};
use kubevirt_api::core::v1::{VirtualMachineInstance, VirtualMachineInstanceSpec, Volume};
use kubevirt_api::defaults::{ClusterDefaults, default_vmi_spec};
use kubevirt_api::object::Object;
use kubevirt_api::quantity::bytes_of;
use std::time::Duration;

struct Errors(Vec<PlanError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(PlanError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// The cluster defaults a standalone launcher applies: upstream's, with the pod network attached
/// through masquerade (the binding kubevirt-rs provides).
pub fn standalone_defaults() -> ClusterDefaults {
    ClusterDefaults {
        default_network_interface: "masquerade".into(),
        ..ClusterDefaults::default()
    }
}

/// The VMI a document describes, with upstream's defaults applied as the API server would: a
/// VMI as is, or a VM's template named after the VM.
pub fn vmi_of(object: &Object) -> Result<VirtualMachineInstance, PlanErrors> {
    let one = |path: &str, message: String| {
        PlanErrors(vec![PlanError {
            path: path.into(),
            message,
        }])
    };
    let mut vmi = match object {
        Object::VirtualMachineInstance(vmi) => (**vmi).clone(),
        Object::VirtualMachine(vm) => {
            let spec = vm.spec.template.spec.clone().ok_or_else(|| {
                one(
                    "spec.template.spec",
                    "the VM template has no VMI spec".into(),
                )
            })?;
            let mut vmi =
                VirtualMachineInstance::new(vm.metadata.name.as_deref().unwrap_or("vm"), spec);
            vmi.metadata.namespace = vm.metadata.namespace.clone();
            vmi.metadata.labels = vm
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone());
            vmi
        }
        other => {
            return Err(one(
                "kind",
                format!(
                    "a {} cannot be launched; give a VirtualMachineInstance or a VirtualMachine",
                    other.kind()
                ),
            ));
        }
    };
    let key = format!(
        "{}/{}",
        vmi.metadata.namespace.as_deref().unwrap_or("default"),
        vmi.metadata.name.as_deref().unwrap_or("")
    );
    default_vmi_spec(&mut vmi.spec, &key, &standalone_defaults());
    Ok(vmi)
}

/// The plan for a VMI, or a VM (its template, named after the VM), decoded from a document as a
/// user wrote it: upstream's defaults are applied first, as the API server would.
pub fn from_document(object: &Object) -> Result<LaunchPlan, PlanErrors> {
    let vmi = vmi_of(object)?;
    from_vmi(&vmi).map_err(|PlanErrors(errs)| {
        if matches!(object, Object::VirtualMachine(_)) {
            PlanErrors(
                errs.into_iter()
                    .map(|e| PlanError {
                        path: e.path.replacen("spec.", "spec.template.spec.", 1),
                        ..e
                    })
                    .collect(),
            )
        } else {
            PlanErrors(errs)
        }
    })
}

/// The plan for `vmi`, or every reason it cannot be launched.
pub fn from_vmi(vmi: &VirtualMachineInstance) -> Result<LaunchPlan, PlanErrors> {
    let spec = &vmi.spec;
    let mut errs = Errors(Vec::new());
    let json = serde_json::to_value(spec).unwrap_or_default();
    for path in unsupported(&json) {
        errs.push(format!("spec.{path}"), "not supported by kubevirt-rs yet");
    }
    for path in NOT_WHEN_TRUE {
        let pointer = format!("/{}", path.replace('.', "/"));
        if json.pointer(&pointer) == Some(&serde_json::Value::Bool(true)) {
            errs.push(
                format!("spec.{path}"),
                "kubevirt-rs has no such device yet; set it to false or leave it out",
            );
        }
    }
    let cpu = cpu(spec, &mut errs);
    let memory_bytes = memory(spec, &mut errs);
    let kernel_boot = kernel_boot(spec, &mut errs);
    let disks = disks(spec, &mut errs);
    let network = network(spec, &mut errs);
    let domain = &spec.domain;
    if let Some(t) = domain.machine.as_ref().and_then(|m| m.type_.as_deref())
        && t != "q35"
        && !t.starts_with("pc-q35")
    {
        errs.push(
            "spec.domain.machine.type",
            format!("machine type {t:?} is not supported; kubevirt-rs provides a q35-like machine"),
        );
    }
    if let Some(a) = spec.architecture.as_deref()
        && a != "amd64"
    {
        errs.push(
            "spec.architecture",
            format!("architecture {a:?} is not supported; kubevirt-rs runs amd64 guests"),
        );
    }
    let mut disabled = Vec::new();
    if let Some(c) = &domain.cpu {
        if let Some(m) = c.model.as_deref()
            && m != "host-model"
            && m != "host-passthrough"
        {
            errs.push(
                "spec.domain.cpu.model",
                format!("CPU model {m:?} is not supported; use host-model or host-passthrough"),
            );
        }
        for (i, f) in c.features.iter().flatten().enumerate() {
            match f.policy.as_deref().unwrap_or("require") {
                "disable" | "forbid" => {
                    // Names the VMM does not know are refused here, at their index.
                    match kubevirt_vmm::CpuFeatureMask::disable([f.name.as_str()]) {
                        Ok(_) => disabled.push(f.name.clone()),
                        Err(e) => {
                            errs.push(format!("spec.domain.cpu.features[{i}].name"), e.to_string())
                        }
                    }
                }
                p => errs.push(
                    format!("spec.domain.cpu.features[{i}].policy"),
                    format!("policy {p:?} is not supported yet; only disable and forbid are"),
                ),
            }
        }
    }
    // SMBIOS system UUID: the firmware's, else the VMI's uid (upstream's webhook sets one).
    let firmware = domain.firmware.as_ref();
    let firmware_uuid = match firmware.and_then(|f| f.uuid.as_deref()) {
        Some(u) => match uuid::Uuid::parse_str(u) {
            Ok(u) => Some(*u.as_bytes()),
            Err(e) => {
                errs.push(
                    "spec.domain.firmware.uuid",
                    format!("{u:?} is not a UUID: {e}"),
                );
                None
            }
        },
        None => vmi
            .metadata
            .uid
            .as_deref()
            .and_then(|u| uuid::Uuid::parse_str(u).ok())
            .map(|u| *u.as_bytes()),
    };
    if !errs.0.is_empty() {
        return Err(PlanErrors(errs.0));
    }
    let (Some(cpu), Some(memory_bytes), Some(kernel_boot)) = (cpu, memory_bytes, kernel_boot)
    else {
        return Err(PlanErrors(errs.0));
    };
    Ok(LaunchPlan {
        name: vmi.metadata.name.clone().unwrap_or_default(),
        namespace: vmi
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        cpu,
        memory_bytes,
        disabled_cpu_features: disabled,
        firmware_uuid,
        firmware_serial: domain.firmware.as_ref().and_then(|f| f.serial.clone()),
        kernel_boot,
        disks,
        network,
        rng: domain.devices.rng.is_some(),
        serial_console: domain.devices.autoattach_serial_console != Some(false),
        log_serial_console: domain.devices.log_serial_console == Some(true),
        grace_period: Duration::from_secs(
            spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64,
        ),
    })
}

fn cpu(spec: &VirtualMachineInstanceSpec, errs: &mut Errors) -> Option<CpuTopology> {
    let c = spec.domain.cpu.as_ref();
    let t = CpuTopology {
        sockets: c.and_then(|c| c.sockets).unwrap_or(1),
        cores: c.and_then(|c| c.cores).unwrap_or(1),
        threads: c.and_then(|c| c.threads).unwrap_or(1),
    };
    if t.vcpus() == 0 || t.vcpus() > 255 {
        errs.push(
            "spec.domain.cpu",
            format!("{} vCPUs: the topology must give 1 to 255", t.vcpus()),
        );
        return None;
    }
    // The guest sees exactly this topology (MADT, CPUID, SMBIOS); what the VMM cannot lay out
    // is refused here, with the reason.
    if let Err(e) = t.for_vmm() {
        errs.push("spec.domain.cpu", e.to_string());
        return None;
    }
    Some(t)
}

fn memory(spec: &VirtualMachineInstanceSpec, errs: &mut Errors) -> Option<u64> {
    let d = &spec.domain;
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
        errs.push(
            "spec.domain.memory.guest",
            "memory must be requested: set domain.memory.guest or domain.resources.requests.memory",
        );
        return None;
    };
    match bytes_of(q) {
        Ok(b) if b >= 1 << 20 => Some(b),
        Ok(b) => {
            errs.push(
                path,
                format!("{b} bytes is too little memory: give at least 1Mi"),
            );
            None
        }
        Err(e) => {
            errs.push(path, e.to_string());
            None
        }
    }
}

fn kernel_boot(spec: &VirtualMachineInstanceSpec, errs: &mut Errors) -> Option<KernelBoot> {
    let kb = spec
        .domain
        .firmware
        .as_ref()
        .and_then(|f| f.kernel_boot.as_ref());
    let Some(container) = kb.and_then(|k| k.container.as_ref()) else {
        errs.push(
            "spec.domain.firmware.kernelBoot",
            "kubevirt-rs boots guests by direct kernel boot for now (no BIOS/EFI firmware): set firmware.kernelBoot.container",
        );
        return None;
    };
    if container.kernel_path.is_none() {
        errs.push(
            "spec.domain.firmware.kernelBoot.container.kernelPath",
            "the path of the kernel inside the image is required",
        );
        return None;
    }
    Some(KernelBoot {
        image: container.image.clone(),
        kernel_path: container.kernel_path.clone(),
        initrd_path: container.initrd_path.clone(),
        cmdline: kb.and_then(|k| k.kernel_args.clone()).unwrap_or_default(),
    })
}

fn disks(spec: &VirtualMachineInstanceSpec, errs: &mut Errors) -> Vec<DiskPlan> {
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for (i, d) in spec.domain.devices.disks.iter().flatten().enumerate() {
        let p = format!("spec.domain.devices.disks[{i}]");
        if let Some(bus) = d.disk.as_ref().and_then(|t| t.bus.as_deref())
            && bus != "virtio"
        {
            errs.push(
                format!("{p}.disk.bus"),
                format!("bus {bus:?} is not supported; kubevirt-rs attaches disks as virtio"),
            );
        }
        let cache = match d.cache.as_deref() {
            None | Some("none") => CacheMode::None,
            Some("writethrough") => CacheMode::WriteThrough,
            Some("writeback") => CacheMode::WriteBack,
            Some(other) => {
                errs.push(
                    format!("{p}.cache"),
                    format!("cache mode {other:?} is not one of none, writethrough, writeback"),
                );
                CacheMode::None
            }
        };
        let Some((vi, v)) = volumes.iter().enumerate().find(|(_, v)| v.name == d.name) else {
            errs.push(
                format!("{p}.name"),
                format!("disk {:?} has no volume of the same name", d.name),
            );
            continue;
        };
        let Some(source) = source(v, &format!("spec.volumes[{vi}]"), errs) else {
            continue;
        };
        let readonly = d.disk.as_ref().and_then(|t| t.readonly).unwrap_or(false)
            || matches!(
                source,
                DiskSource::CloudInitNoCloud(_)
                    | DiskSource::CloudInitConfigDrive(_)
                    | DiskSource::ConfigMap { .. }
                    | DiskSource::Secret { .. }
            )
            || v.persistent_volume_claim
                .as_ref()
                .and_then(|c| c.read_only)
                .unwrap_or(false);
        out.push(DiskPlan {
            name: d.name.clone(),
            source,
            readonly,
            serial: d.serial.clone(),
            cache,
            boot_order: d.boot_order,
        });
    }
    boot_order(&mut out, spec, errs);
    out
}

/// Under direct kernel boot no firmware reads a boot order, so `bootOrder` decides the order the
/// disks are attached in: disks with one first (lowest first), then the rest as listed. The
/// guest enumerates virtio-blk in PCI slot order, so the first boot disk is its `vda`.
fn boot_order(disks: &mut [DiskPlan], spec: &VirtualMachineInstanceSpec, errs: &mut Errors) {
    let mut seen = std::collections::BTreeMap::new();
    for (i, d) in spec.domain.devices.disks.iter().flatten().enumerate() {
        let Some(order) = d.boot_order else { continue };
        let p = format!("spec.domain.devices.disks[{i}].bootOrder");
        if order == 0 {
            errs.push(p, "bootOrder starts at 1".to_string());
        } else if let Some(other) = seen.insert(order, i) {
            errs.push(
                p,
                format!("bootOrder {order} is already used by spec.domain.devices.disks[{other}]"),
            );
        }
    }
    disks.sort_by_key(|d| d.boot_order.map_or((1, 0), |o| (0, o)));
}

fn source(v: &Volume, p: &str, errs: &mut Errors) -> Option<DiskSource> {
    if let Some(c) = &v.container_disk {
        return Some(DiskSource::ContainerDisk {
            image: c.image.clone(),
            path: c.path.clone(),
        });
    }
    if let Some(c) = &v.persistent_volume_claim {
        return Some(DiskSource::PersistentVolumeClaim {
            claim: c.claim_name.clone(),
        });
    }
    if let Some(d) = &v.data_volume {
        return Some(DiskSource::DataVolume {
            name: d.name.clone(),
        });
    }
    if let Some(e) = &v.empty_disk {
        return match bytes_of(&e.capacity) {
            Ok(capacity) if capacity > 0 => Some(DiskSource::EmptyDisk { capacity }),
            Ok(_) => {
                errs.push(
                    format!("{p}.emptyDisk.capacity"),
                    "capacity must be more than 0",
                );
                None
            }
            Err(err) => {
                errs.push(format!("{p}.emptyDisk.capacity"), err.to_string());
                None
            }
        };
    }
    if let Some(c) = &v.cloud_init_no_cloud {
        return Some(DiskSource::CloudInitNoCloud(Box::new(c.clone())));
    }
    if let Some(c) = &v.cloud_init_config_drive {
        return Some(DiskSource::CloudInitConfigDrive(Box::new(c.clone())));
    }
    if let Some(h) = &v.host_disk {
        let create = match h.type_.as_str() {
            "Disk" => false,
            "DiskOrCreate" => true,
            other => {
                errs.push(
                    format!("{p}.hostDisk.type"),
                    format!("type {other:?} is not Disk or DiskOrCreate"),
                );
                return None;
            }
        };
        let capacity = h.capacity.as_ref().and_then(|c| bytes_of(c).ok());
        if create && capacity.is_none() {
            errs.push(
                format!("{p}.hostDisk.capacity"),
                "DiskOrCreate needs a capacity",
            );
            return None;
        }
        return Some(DiskSource::HostDisk {
            path: h.path.clone(),
            create,
            capacity,
        });
    }
    if let Some(c) = &v.config_map {
        return Some(DiskSource::ConfigMap {
            name: c.name.clone().unwrap_or_default(),
            optional: c.optional.unwrap_or(false),
            volume_label: c.volume_label.clone().filter(|l| !l.is_empty()),
        });
    }
    if let Some(s) = &v.secret {
        return Some(DiskSource::Secret {
            name: s.secret_name.clone().unwrap_or_default(),
            optional: s.optional.unwrap_or(false),
            volume_label: s.volume_label.clone().filter(|l| !l.is_empty()),
        });
    }
    errs.push(p.to_string(), "this volume source cannot back a disk");
    None
}

fn network(spec: &VirtualMachineInstanceSpec, errs: &mut Errors) -> Option<NetworkPlan> {
    let ifaces = spec
        .domain
        .devices
        .interfaces
        .as_deref()
        .unwrap_or_default();
    let networks = spec.networks.as_deref().unwrap_or_default();
    if ifaces.len() > 1 {
        errs.push(
            "spec.domain.devices.interfaces",
            "only one interface (the pod network) is supported yet",
        );
        return None;
    }
    let iface = ifaces.first()?;
    let Some(net) = networks.iter().find(|n| n.name == iface.name) else {
        errs.push(
            "spec.domain.devices.interfaces[0].name",
            format!("interface {:?} has no network of the same name", iface.name),
        );
        return None;
    };
    if net.pod.is_none() {
        errs.push("spec.networks", "only the pod network is supported yet");
        return None;
    }
    if iface.masquerade.is_none() {
        errs.push(
            "spec.domain.devices.interfaces[0]",
            "the pod network needs the masquerade binding",
        );
        return None;
    }
    if let Some(m) = iface.model.as_deref().filter(|m| *m != "virtio") {
        errs.push(
            "spec.domain.devices.interfaces[0].model",
            format!("model {m:?} is not supported; kubevirt-rs provides virtio-net"),
        );
    }
    let mut ports = Vec::new();
    for (i, port) in iface.ports.iter().flatten().enumerate() {
        match u16::try_from(port.port) {
            Ok(n) if n > 0 => {
                ports.push((port.protocol.clone().unwrap_or_else(|| "TCP".into()), n))
            }
            _ => errs.push(
                format!("spec.domain.devices.interfaces[0].ports[{i}].port"),
                "port must be 1-65535",
            ),
        }
    }
    let mac = iface.mac_address.as_deref().and_then(|m| {
        let parsed = parse_mac(m);
        if parsed.is_none() {
            errs.push(
                "spec.domain.devices.interfaces[0].macAddress",
                format!("{m:?} is not a unicast MAC address like 02:00:00:00:00:01"),
            );
        }
        parsed
    });
    Some(NetworkPlan {
        name: iface.name.clone(),
        mac,
        ports,
    })
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), unicast only.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for b in &mut mac {
        let part = parts.next().filter(|p| p.len() == 2)?;
        *b = u8::from_str_radix(part, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}
