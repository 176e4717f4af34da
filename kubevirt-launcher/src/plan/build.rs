//! Building a [`LaunchPlan`]: the document defaulted and validated once ([`vmi_of`]), then mapped
//! onto the VMM's types ([`from_vmi`]), refusing only what kubevirt-rs cannot do yet.

use super::supported::{NOT_WHEN_TRUE, unsupported};
use super::{
    Binding, BootPlan, CacheMode, CpuTopology, DiskPlan, DiskSource, ErrorPolicy, KernelBoot,
    LaunchPlan, NetworkPlan, PlanErrors,
};
use kubevirt_api::core::v1::{VirtualMachineInstance, VirtualMachineInstanceSpec, Volume};
use kubevirt_api::defaults::{
    ClusterDefaults, DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS, apply, default_vmi_spec,
};
use kubevirt_api::object::Object;
use kubevirt_api::path::FieldPath;
use kubevirt_api::quantity::bytes_of;
use kubevirt_api::validation::{FieldError, validate};
use std::time::Duration;

/// What a VMI asks for that kubevirt-rs cannot do, by field.
struct Refusals(Vec<FieldError>);

impl Refusals {
    /// A field kubevirt-rs cannot honour (with this value).
    fn cannot(&mut self, path: FieldPath, message: impl AsRef<str>) {
        self.0.push(FieldError::forbidden(path, message.as_ref()));
    }

    /// A field the launch needs that is not set.
    fn needs(&mut self, path: FieldPath, message: &str) {
        self.0.push(FieldError::required(path, message));
    }
}

/// The VMI a document describes, defaulted and validated as the API server does it (with the
/// kubevirt-rs cluster defaults): a VMI as is, or a VM's template named after the VM. Also where
/// in the document its VMI spec is (`spec`, or `spec.template.spec` for a VM), for the paths of
/// later refusals.
///
/// # Errors
/// Every validation error of the document, with its field path.
pub fn vmi_of(object: &Object) -> Result<(VirtualMachineInstance, FieldPath), PlanErrors> {
    let cluster = ClusterDefaults::kubevirt_rs();
    let mut object = object.clone();
    apply(&mut object, &cluster);
    let invalid = validate(&object);
    if !invalid.is_empty() {
        return Err(PlanErrors(invalid));
    }
    let root = FieldPath::root();
    let (mut vmi, base) = match object {
        Object::VirtualMachineInstance(vmi) => (*vmi, root.field("spec")),
        Object::VirtualMachine(vm) => {
            let base = root.field("spec").field("template").field("spec");
            let Some(spec) = vm.spec.template.spec.clone() else {
                return Err(PlanErrors(vec![FieldError::required(
                    base,
                    "the VM template has no VMI spec",
                )]));
            };
            let mut vmi =
                VirtualMachineInstance::new(vm.metadata.name.as_deref().unwrap_or("vm"), spec);
            vmi.metadata.namespace = vm.metadata.namespace.clone();
            vmi.metadata.labels = vm
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone());
            (vmi, base)
        }
        other => {
            return Err(PlanErrors(vec![FieldError::not_supported(
                root.field("kind"),
                other.kind(),
                &["VirtualMachineInstance", "VirtualMachine"],
            )]));
        }
    };
    // A VM's template gets the rest of the VMI defaults when its VMI is created.
    let key = format!(
        "{}/{}",
        vmi.metadata.namespace.as_deref().unwrap_or("default"),
        vmi.metadata.name.as_deref().unwrap_or("")
    );
    default_vmi_spec(&mut vmi.spec, &key, &cluster);
    Ok((vmi, base))
}

/// The plan for a VMI, or a VM (its template, named after the VM), decoded from a document as a
/// user wrote it: defaulted and validated first, as the API server would.
///
/// # Errors
/// The document's validation errors, else every field kubevirt-rs cannot honour.
pub fn from_document(object: &Object) -> Result<LaunchPlan, PlanErrors> {
    let (vmi, base) = vmi_of(object)?;
    from_vmi(&vmi, &base)
}

/// The plan for a defaulted, valid `vmi` whose spec is at `base` in its document (`spec`), or
/// every field kubevirt-rs cannot honour. What validation refuses is not checked again.
///
/// # Errors
/// Every field kubevirt-rs cannot honour, by path.
pub fn from_vmi(vmi: &VirtualMachineInstance, base: &FieldPath) -> Result<LaunchPlan, PlanErrors> {
    let spec = &vmi.spec;
    let mut errs = Refusals(Vec::new());
    let json = serde_json::to_value(spec).unwrap_or_default();
    for path in unsupported(&json, base) {
        errs.cannot(path, "not supported by kubevirt-rs yet");
    }
    for path in NOT_WHEN_TRUE {
        let pointer = format!("/{}", path.replace('.', "/"));
        if json.pointer(&pointer) == Some(&serde_json::Value::Bool(true)) {
            let at = path.split('.').fold(base.clone(), |p, f| p.field(f));
            errs.cannot(
                at,
                "kubevirt-rs has no such device yet; set it to false or leave it out",
            );
        }
    }
    let domain_path = base.field("domain");
    let cpu = cpu(spec, &domain_path, &mut errs);
    let memory_bytes = memory(spec, &domain_path, &mut errs);
    let boot = boot(spec, &domain_path, &mut errs);
    let mut disks = disks(spec, base, &mut errs);
    for d in &mut disks {
        if let DiskSource::PersistentVolumeClaim { capacity, .. }
        | DiskSource::DataVolume { capacity, .. } = &mut d.source
        {
            *capacity = claim_capacity(vmi, &d.name);
        }
    }
    let network = network(spec, base, &mut errs);
    let domain = &spec.domain;
    if let Some(t) = domain.machine.as_ref().and_then(|m| m.type_.as_deref())
        && t != "q35"
        && !t.starts_with("pc-q35")
    {
        errs.cannot(
            domain_path.field("machine").field("type"),
            format!("machine type {t:?} is not supported; kubevirt-rs provides a q35-like machine"),
        );
    }
    if let Some(a) = spec.architecture.as_deref()
        && a != "amd64"
    {
        errs.cannot(
            base.field("architecture"),
            format!("architecture {a:?} is not supported; kubevirt-rs runs amd64 guests"),
        );
    }
    let disabled = cpu_features(spec, &domain_path, &mut errs);
    // SMBIOS system UUID: the firmware's (the defaults always set one), else the VMI's uid.
    let firmware = domain.firmware.as_ref();
    let firmware_uuid = match firmware.and_then(|f| f.uuid.as_deref()) {
        Some(u) => match uuid::Uuid::parse_str(u) {
            Ok(u) => Some(*u.as_bytes()),
            Err(e) => {
                errs.cannot(
                    domain_path.field("firmware").field("uuid"),
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
    let (Some(cpu), Some(memory_bytes), Some(boot), true) =
        (cpu, memory_bytes, boot, errs.0.is_empty())
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
        firmware_serial: firmware.and_then(|f| f.serial.clone()),
        boot,
        disks,
        network,
        rng: domain.devices.rng.is_some(),
        serial_console: domain.devices.autoattach_serial_console != Some(false),
        log_serial_console: domain.devices.log_serial_console == Some(true),
        grace_period: Duration::from_secs(
            spec.termination_grace_period_seconds
                .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
                .max(0) as u64,
        ),
    })
}

/// The topology as the VMM lays it out (MADT, CPUID, SMBIOS): what it cannot present is refused
/// with its reason.
fn cpu(
    spec: &VirtualMachineInstanceSpec,
    at: &FieldPath,
    errs: &mut Refusals,
) -> Option<CpuTopology> {
    let c = spec.domain.cpu.as_ref();
    let count = |n: Option<u32>| u8::try_from(n.unwrap_or(1)).unwrap_or(u8::MAX);
    match CpuTopology::new(
        count(c.and_then(|c| c.sockets)),
        count(c.and_then(|c| c.cores)),
        count(c.and_then(|c| c.threads)),
    ) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.cannot(at.field("cpu"), e.to_string());
            None
        }
    }
}

/// CPU model and features: the VMM passes the host's CPU through and can only hide features.
fn cpu_features(
    spec: &VirtualMachineInstanceSpec,
    at: &FieldPath,
    errs: &mut Refusals,
) -> Vec<String> {
    let mut disabled = Vec::new();
    let Some(c) = &spec.domain.cpu else {
        return disabled;
    };
    let at = at.field("cpu");
    if let Some(m) = c.model.as_deref()
        && m != "host-model"
        && m != "host-passthrough"
    {
        errs.cannot(
            at.field("model"),
            format!("CPU model {m:?} is not supported; use host-model or host-passthrough"),
        );
    }
    for (i, f) in c.features.iter().flatten().enumerate() {
        let p = at.field("features").index(i);
        match f.policy.as_deref().unwrap_or("require") {
            // Names the VMM does not know are refused here, at their index.
            "disable" | "forbid" => {
                match kubevirt_vmm::CpuFeatureMask::disable([f.name.as_str()]) {
                    Ok(_) => disabled.push(f.name.clone()),
                    Err(e) => errs.cannot(p.field("name"), e.to_string()),
                }
            }
            policy => errs.cannot(
                p.field("policy"),
                format!("policy {policy:?} is not supported yet; only disable and forbid are"),
            ),
        }
    }
    disabled
}

/// The guest's memory: `memory.guest`, which the defaults derive from the request when unset.
fn memory(spec: &VirtualMachineInstanceSpec, at: &FieldPath, errs: &mut Refusals) -> Option<u64> {
    let d = &spec.domain;
    let (path, q) = if let Some(g) = d.memory.as_ref().and_then(|m| m.guest.as_ref()) {
        (at.field("memory").field("guest"), g)
    } else if let Some(r) = d
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("memory"))
    {
        (at.field("resources").field("requests").key("memory"), r)
    } else {
        // A VM template may leave memory to an instancetype; the launcher has none to apply.
        errs.needs(
            at.field("memory").field("guest"),
            "memory must be requested: set domain.memory.guest or domain.resources.requests.memory",
        );
        return None;
    };
    match bytes_of(q) {
        Ok(b) if b >= 1 << 20 => Some(b),
        Ok(b) => {
            errs.cannot(
                path,
                format!("{b} bytes is too little memory: give at least 1Mi"),
            );
            None
        }
        Err(e) => {
            errs.cannot(path, e.to_string());
            None
        }
    }
}

/// How the guest boots: direct kernel boot when `firmware.kernelBoot` is set, else firmware:
/// `bootloader.efi` is OVMF (without secure boot), anything else (`bootloader.bios`, or no
/// bootloader, upstream's default) SeaBIOS.
fn boot(
    spec: &VirtualMachineInstanceSpec,
    at: &FieldPath,
    errs: &mut Refusals,
) -> Option<BootPlan> {
    let at = at.field("firmware");
    let firmware = spec.domain.firmware.as_ref();
    if let Some(kb) = firmware.and_then(|f| f.kernel_boot.as_ref()) {
        let at = at.field("kernelBoot");
        let Some(container) = kb.container.as_ref() else {
            errs.needs(
                at.field("container"),
                "direct kernel boot takes the kernel from a container image: set kernelBoot.container (or drop kernelBoot to boot the disks through firmware)",
            );
            return None;
        };
        if container.kernel_path.is_none() {
            errs.needs(
                at.field("container").field("kernelPath"),
                "the path of the kernel inside the image is required",
            );
            return None;
        }
        return Some(BootPlan::Kernel(KernelBoot {
            image: container.image.clone(),
            kernel_path: container.kernel_path.clone(),
            initrd_path: container.initrd_path.clone(),
            cmdline: kb.kernel_args.clone().unwrap_or_default(),
        }));
    }
    let Some(efi) = firmware
        .and_then(|f| f.bootloader.as_ref())
        .and_then(|b| b.efi.as_ref())
    else {
        return Some(BootPlan::Bios);
    };
    let at = at.field("bootloader").field("efi");
    let mut ok = true;
    // Upstream's default for secureBoot is true.
    if efi.secure_boot != Some(false) {
        errs.cannot(
            at.field("secureBoot"),
            "secure boot is not supported by kubevirt-rs (it needs SMM and the secure-boot OVMF build): set secureBoot: false, or use bootloader.bios",
        );
        ok = false;
    }
    if efi.persistent == Some(true) {
        errs.cannot(
            at.field("persistent"),
            "a persistent EFI variable store is not supported by kubevirt-rs yet: the store lives as long as the VMI; set persistent: false",
        );
        ok = false;
    }
    ok.then_some(BootPlan::Efi)
}

fn disks(
    spec: &VirtualMachineInstanceSpec,
    base: &FieldPath,
    errs: &mut Refusals,
) -> Vec<DiskPlan> {
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for (i, d) in spec.domain.devices.disks.iter().flatten().enumerate() {
        let p = base
            .field("domain")
            .field("devices")
            .field("disks")
            .index(i);
        if let Some(bus) = d.disk.as_ref().and_then(|t| t.bus.as_deref())
            && bus != "virtio"
        {
            errs.cannot(
                p.field("disk").field("bus"),
                format!("bus {bus:?} is not supported; kubevirt-rs attaches disks as virtio"),
            );
        }
        // Validation allows only upstream's three modes.
        let cache = match d.cache.as_deref() {
            Some("writethrough") => CacheMode::Writethrough,
            Some("writeback") => CacheMode::Writeback,
            _ => CacheMode::None,
        };
        let error_policy = match d.error_policy.as_deref().map(str::parse::<ErrorPolicy>) {
            None => ErrorPolicy::Stop,
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                errs.cannot(p.field("errorPolicy"), e.to_string());
                ErrorPolicy::Stop
            }
        };
        // Validation made sure every disk has its volume.
        let Some((vi, v)) = volumes.iter().enumerate().find(|(_, v)| v.name == d.name) else {
            continue;
        };
        let Some(source) = source(v, &base.field("volumes").index(vi), errs) else {
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
            error_policy,
            boot_order: d.boot_order,
        });
    }
    // `bootOrder` (unique and ≥ 1, validation saw to it) decides the order the disks are
    // attached in: disks with one first (lowest first), then the rest as listed. Under direct
    // kernel boot no firmware reads a boot order, and the guest enumerates virtio-blk in PCI
    // slot order, so the first boot disk is its `vda`; firmware gets the order as `bootorder`.
    out.sort_by_key(|d| d.boot_order.map_or((1, 0), |o| (0, o)));
    out
}

/// The capacity of volume `name`'s claim as the VMI's status reports it (upstream's
/// `volumeStatus[].persistentVolumeClaimInfo.capacity.storage`, the claim's status capacity).
fn claim_capacity(vmi: &VirtualMachineInstance, name: &str) -> Option<u64> {
    let status = vmi.status.as_ref()?.volume_status.as_ref()?;
    let info = status
        .iter()
        .find(|s| s.name == name)?
        .persistent_volume_claim_info
        .as_ref()?;
    bytes_of(info.capacity.as_ref()?.get("storage")?).ok()
}

fn source(v: &Volume, p: &FieldPath, errs: &mut Refusals) -> Option<DiskSource> {
    if let Some(c) = &v.container_disk {
        return Some(DiskSource::ContainerDisk {
            image: c.image.clone(),
            path: c.path.clone(),
        });
    }
    if let Some(c) = &v.persistent_volume_claim {
        return Some(DiskSource::PersistentVolumeClaim {
            claim: c.claim_name.clone(),
            capacity: None,
        });
    }
    if let Some(d) = &v.data_volume {
        return Some(DiskSource::DataVolume {
            name: d.name.clone(),
            capacity: None,
        });
    }
    if let Some(e) = &v.empty_disk {
        let at = p.field("emptyDisk").field("capacity");
        return match bytes_of(&e.capacity) {
            Ok(capacity) if capacity > 0 => Some(DiskSource::EmptyDisk { capacity }),
            Ok(_) => {
                errs.cannot(at, "capacity must be more than 0");
                None
            }
            Err(err) => {
                errs.cannot(at, err.to_string());
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
                errs.cannot(
                    p.field("hostDisk").field("type"),
                    format!("type {other:?} is not Disk or DiskOrCreate"),
                );
                return None;
            }
        };
        let capacity = h.capacity.as_ref().and_then(|c| bytes_of(c).ok());
        if create && capacity.is_none() {
            errs.needs(
                p.field("hostDisk").field("capacity"),
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
    errs.cannot(p.clone(), "this volume source cannot back a disk");
    None
}

/// The pod network through the masquerade or the bridge binding, on virtio-net: all kubevirt-rs
/// provides.
/// Names, bindings, ports and MAC syntax were validated.
fn network(
    spec: &VirtualMachineInstanceSpec,
    base: &FieldPath,
    errs: &mut Refusals,
) -> Option<NetworkPlan> {
    let at = base.field("domain").field("devices").field("interfaces");
    let ifaces = spec
        .domain
        .devices
        .interfaces
        .as_deref()
        .unwrap_or_default();
    let networks = spec.networks.as_deref().unwrap_or_default();
    if ifaces.len() > 1 {
        errs.cannot(at, "only one interface (the pod network) is supported yet");
        return None;
    }
    let iface = ifaces.first()?;
    let at = at.index(0);
    let net = networks.iter().find(|n| n.name == iface.name)?;
    if net.pod.is_none() {
        errs.cannot(
            base.field("networks"),
            "only the pod network is supported yet",
        );
        return None;
    }
    let binding = if iface.masquerade.is_some() {
        Binding::Masquerade
    } else if iface.bridge.is_some() {
        if iface.ports.as_deref().is_some_and(|p| !p.is_empty()) {
            errs.cannot(
                at.field("ports"),
                "ports are forwarded by the masquerade binding only; with bridge the guest has the pod's address and every port",
            );
        }
        Binding::Bridge
    } else {
        errs.cannot(
            at,
            "the pod network needs the masquerade or the bridge binding",
        );
        return None;
    };
    if let Some(m) = iface.model.as_deref().filter(|m| *m != "virtio") {
        errs.cannot(
            at.field("model"),
            format!("model {m:?} is not supported; kubevirt-rs provides virtio-net"),
        );
    }
    let ports = iface
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let n = u16::try_from(port.port).ok()?;
            Some((port.protocol.clone().unwrap_or_else(|| "TCP".into()), n))
        })
        .collect();
    let mac = iface.mac_address.as_deref().and_then(|m| {
        let parsed = parse_mac(m).filter(|mac| mac[0] & 1 == 0);
        if parsed.is_none() {
            errs.cannot(
                at.field("macAddress"),
                format!("{m:?} is a multicast address; a guest NIC needs a unicast one like 02:00:00:00:00:01"),
            );
        }
        parsed
    });
    Some(NetworkPlan {
        name: iface.name.clone(),
        binding,
        mac,
        ports,
    })
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), the syntax validation accepted.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
