//! The virt-launcher pod of a VMI, rendered as a pure function (the pod contract of issue 14):
//! upstream's name, labels and annotations, a `compute` container running `kubevirt-launcher
//! serve` from the launcher image and a `guest-console-log` container, the host directories the
//! node agent shares with the launcher, the VMI's claims ([`claims`]), the VMI's scheduling
//! constraints, and requests sized as guest memory + [`super::overhead`].

pub mod claims;
pub mod security;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, HostPathVolumeSource, Pod, PodSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_api::defaults::DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS;

pub use claims::{ClaimModes, VOLUMES_IN_POD};

use super::overhead::{OverheadError, guest_memory, memory_overhead, vcpus};
use super::{APP_LABEL, APP_LAUNCHER, COMPUTE_CONTAINER, CONSOLE_LOG_CONTAINER};
use super::{CREATED_BY_LABEL, DOMAIN_LABEL};
use crate::clusterconfig::ClusterConfig;
use crate::vm::instance::VM_NAME_LABEL;

/// The launcher binary in the launcher image.
pub const LAUNCHER_BINARY: &str = "/usr/bin/kubevirt-launcher";
/// Where the VMI's run directory (`<launcher-root>/<uid>` on the host) is mounted in the pod.
pub const RUN_DIR_IN_POD: &str = "/var/run/kubevirt-rs/vmi";
/// Where the image cache is mounted in the pod.
pub const CACHE_IN_POD: &str = "/var/cache/kubevirt-rs/images";
/// Where the registry host configuration (`certs.d`) is mounted in the pod.
pub const REGISTRY_CONFIG_IN_POD: &str = "/etc/kubevirt-rs/certs.d";
/// The node label every node that runs VMIs carries (upstream's).
pub const SCHEDULABLE_LABEL: &str = "kubevirt.io/schedulable";
/// The extended resource of `/dev/kvm`.
pub const KVM_RESOURCE: &str = "devices.kubevirt.io/kvm";
/// The extended resource of `/dev/net/tun`.
pub const TUN_RESOURCE: &str = "devices.kubevirt.io/tun";
/// What the pod's grace period adds to the VMI's: time for the launcher to exit after the ACPI
/// shutdown's own grace period.
pub const EXIT_GRACE_SECONDS: i64 = 15;

/// What the pods of every VMI share: where things are on the node and in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodConfig {
    /// The launcher image (`compute` and `guest-console-log` run it).
    pub launcher_image: String,
    /// The node agent's launcher root: a VMI's run directory is `<launcher_root>/<uid>`.
    pub launcher_root: PathBuf,
    /// The launchers' shared image cache on the node.
    pub image_cache: PathBuf,
    /// The registry host configuration (containerd's `certs.d`) on the node, if any.
    pub registry_config_dir: Option<PathBuf>,
    /// Registries the launcher pulls from over plain HTTP (`HOST:PORT`).
    pub plain_http_registries: Vec<String>,
    /// What relative `oci:PATH` image references are relative to.
    pub working_dir: PathBuf,
}

/// Why a VMI's pod cannot be rendered; each names the VMI field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// No uid: its run directory and labels need it (the API server assigns one on create).
    #[error(
        "metadata.uid: the VMI has no uid (the API server assigns one on create); its pod's run directory and labels need it"
    )]
    NoUid,
    /// No name.
    #[error("metadata.name: the VMI has no name")]
    NoName,
    /// No namespace.
    #[error("metadata.namespace: the VMI has no namespace")]
    NoNamespace,
    /// The guest memory cannot be sized.
    #[error(transparent)]
    Memory(#[from] OverheadError),
    /// A claim the controller did not look up (a bug: it reads every claim the VMI names).
    #[error("{field}: the claim {claim:?} was not looked up")]
    UnknownClaim {
        /// The volume's field path.
        field: String,
        /// The claim.
        claim: String,
    },
    /// A claim volume named like one of the pod's own volumes.
    #[error("{field}: the volume name {name:?} is the launcher pod's own; rename the volume")]
    ReservedVolume {
        /// The volume's field path.
        field: String,
        /// Its name.
        name: String,
    },
    /// A field behind a feature gate the KubeVirt CR does not enable (upstream's words).
    #[error("{path}: {gate} feature gate is not enabled")]
    FeatureGate {
        /// The field path.
        path: String,
        /// The gate.
        gate: &'static str,
    },
    /// A resource quantity is not valid.
    #[error("{path}: {message}")]
    Quantity {
        /// The field path.
        path: String,
        /// Why.
        message: String,
    },
}

/// Refuses what the cluster configuration's feature gates keep out: `hostDisk` volumes
/// without `HostDisk` (upstream refuses them at admission).
fn gated(vmi: &VirtualMachineInstance, cluster: &ClusterConfig) -> Result<(), RenderError> {
    if cluster.gate("HostDisk") {
        return Ok(());
    }
    let volumes = vmi.spec.volumes.as_deref().unwrap_or_default();
    match volumes.iter().position(|v| v.host_disk.is_some()) {
        Some(i) => Err(RenderError::FeatureGate {
            path: format!("spec.volumes[{i}].hostDisk"),
            gate: "HostDisk",
        }),
        None => Ok(()),
    }
}

/// The pod that runs `vmi`, ready to create (`generateName`: the API server names it). `claims`
/// holds the volume mode of every claim the VMI names ([`claims::claim_volumes`]).
pub fn pod_for(
    vmi: &VirtualMachineInstance,
    config: &PodConfig,
    claims: &ClaimModes,
) -> Result<Pod, RenderError> {
    pod_for_in(vmi, config, claims, &ClusterConfig::default())
}

/// [`pod_for`] under the cluster configuration `cluster` (the KubeVirt CR's
/// `cpuAllocationRatio` and `memoryOvercommit` size the requests).
pub fn pod_for_in(
    vmi: &VirtualMachineInstance,
    config: &PodConfig,
    claims: &ClaimModes,
    cluster: &ClusterConfig,
) -> Result<Pod, RenderError> {
    gated(vmi, cluster)?;
    let uid = vmi.metadata.uid.clone().ok_or(RenderError::NoUid)?;
    let name = vmi.metadata.name.clone().ok_or(RenderError::NoName)?;
    let namespace = vmi
        .metadata
        .namespace
        .clone()
        .ok_or(RenderError::NoNamespace)?;
    let mut labels = vmi.metadata.labels.clone().unwrap_or_default();
    labels.insert(APP_LABEL.into(), APP_LAUNCHER.into());
    labels.insert(CREATED_BY_LABEL.into(), uid.clone());
    labels.insert(DOMAIN_LABEL.into(), name.clone());
    labels.insert(VM_NAME_LABEL.into(), name.clone());
    let annotations = BTreeMap::from([
        (
            "kubectl.kubernetes.io/default-container".to_string(),
            COMPUTE_CONTAINER.to_string(),
        ),
        (DOMAIN_LABEL.to_string(), name.clone()),
    ]);
    let mut node_selector = BTreeMap::from([(SCHEDULABLE_LABEL.to_string(), "true".to_string())]);
    node_selector.extend(vmi.spec.node_selector.clone().unwrap_or_default());
    let grace = vmi
        .spec
        .termination_grace_period_seconds
        .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);

    let (mut volumes, mut mounts) = volumes(vmi, config, &uid);
    let reserved: Vec<String> = volumes.iter().map(|v| v.name.clone()).collect();
    let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
    let claimed = claims::claim_parts(vmi, claims, &reserved)?;
    volumes.extend(claimed.volumes);
    let compute_mounts: Vec<VolumeMount> = mounts.iter().cloned().chain(claimed.mounts).collect();
    let devices = claimed.devices;
    let mut command: Vec<String> = [LAUNCHER_BINARY, "serve", "--namespace", &namespace]
        .into_iter()
        .chain(["--name", &name, "--uid", &uid, "--run-dir", RUN_DIR_IN_POD])
        .chain(["--cache-dir", CACHE_IN_POD])
        .map(str::to_string)
        .collect();
    if config.registry_config_dir.is_some() {
        command.extend([
            "--registry-config-dir".into(),
            REGISTRY_CONFIG_IN_POD.into(),
        ]);
    }
    command.extend(crate::node::plain_http_args(&config.plain_http_registries));
    let compute = Container {
        name: COMPUTE_CONTAINER.into(),
        image: Some(config.launcher_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        resources: Some(compute_resources(vmi, cluster)?),
        // Non-root with no capabilities but NET_BIND_SERVICE (upstream's): the node agent builds
        // the pod network and owns the run directory and disks to the launcher.
        security_context: Some(security::compute_security(cluster)),
        volume_mounts: Some(compute_mounts),
        volume_devices: (!devices.is_empty()).then_some(devices),
        ..Container::default()
    };
    mounts.truncate(1);
    mounts[0].read_only = Some(true);
    let console_log = Container {
        name: CONSOLE_LOG_CONTAINER.into(),
        image: Some(config.launcher_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(
            [LAUNCHER_BINARY, "console-log", "--file"]
                .into_iter()
                .map(str::to_string)
                .chain([format!("{RUN_DIR_IN_POD}/console.log")])
                .collect(),
        ),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "5m"), ("memory", "20Mi")])),
            limits: Some(quantities(&[("cpu", "15m"), ("memory", "60Mi")])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(security::container_security(cluster, &[])),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("virt-launcher-{name}-")),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "kubevirt.io/v1".into(),
                kind: "VirtualMachineInstance".into(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            node_selector: Some(node_selector),
            affinity: vmi.spec.affinity.clone(),
            tolerations: vmi.spec.tolerations.clone(),
            priority_class_name: vmi.spec.priority_class_name.clone(),
            scheduler_name: vmi.spec.scheduler_name.clone(),
            termination_grace_period_seconds: Some(grace.max(0) + EXIT_GRACE_SECONDS),
            automount_service_account_token: Some(false),
            security_context: Some(security::pod_security(cluster)),
            containers: vec![compute, console_log],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// The pod's volumes, and the compute container's mounts (the run directory's first).
fn volumes(
    vmi: &VirtualMachineInstance,
    config: &PodConfig,
    uid: &str,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let host = |name: &str, path: &Path, type_: &str| Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some(type_.into()),
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let mut volumes = vec![
        host(
            "launcher",
            &config.launcher_root.join(uid),
            "DirectoryOrCreate",
        ),
        host("image-cache", &config.image_cache, "DirectoryOrCreate"),
    ];
    let mut mounts = vec![
        mount("launcher", RUN_DIR_IN_POD, false),
        mount("image-cache", CACHE_IN_POD, false),
    ];
    if let Some(dir) = &config.registry_config_dir {
        volumes.push(host("registry-config", dir, "Directory"));
        mounts.push(mount("registry-config", REGISTRY_CONFIG_IN_POD, true));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for image in images(vmi) {
        if let Some((dir, _)) = oci_layout(image, &config.working_dir)
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
        }
    }
    for (i, dir) in dirs.iter().enumerate() {
        let name = format!("oci-{i}");
        volumes.push(host(&name, dir, "Directory"));
        mounts.push(mount(&name, &dir.to_string_lossy(), true));
    }
    (volumes, mounts)
}

/// The image references of `vmi`: containerDisk volumes and the kernelBoot container.
fn images(vmi: &VirtualMachineInstance) -> impl Iterator<Item = &str> {
    let disks = vmi
        .spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.container_disk.as_ref().map(|c| c.image.as_str()));
    let kernel = vmi
        .spec
        .domain
        .firmware
        .as_ref()
        .and_then(|f| f.kernel_boot.as_ref())
        .and_then(|k| k.container.as_ref())
        .map(|c| c.image.as_str());
    disks.chain(kernel)
}

/// An `oci:PATH[:tag]` reference (kubevirt-rs' local OCI layout): the layout's directory made
/// absolute against `working_dir`, and the `:tag` suffix as written (`""` without one).
pub fn oci_layout(image: &str, working_dir: &Path) -> Option<(PathBuf, String)> {
    let rest = image.strip_prefix("oci:")?;
    let (dir, tag) = match rest.rsplit_once(':') {
        Some((d, t)) if !t.contains('/') => (d, format!(":{t}")),
        _ => (rest, String::new()),
    };
    Some((working_dir.join(dir), tag))
}

/// `vmi` with every `oci:PATH` reference made absolute against `working_dir`: what the node
/// agent sends the launcher, whose working directory is not the controller's.
pub fn with_absolute_oci(
    vmi: &VirtualMachineInstance,
    working_dir: &Path,
) -> VirtualMachineInstance {
    let mut vmi = vmi.clone();
    let fix = |image: &mut String| {
        if let Some((dir, tag)) = oci_layout(image, working_dir) {
            *image = format!("oci:{}{tag}", dir.display());
        }
    };
    for v in vmi.spec.volumes.iter_mut().flatten() {
        if let Some(c) = v.container_disk.as_mut() {
            fix(&mut c.image);
        }
    }
    if let Some(c) = vmi
        .spec
        .domain
        .firmware
        .as_mut()
        .and_then(|f| f.kernel_boot.as_mut())
        .and_then(|k| k.container.as_mut())
    {
        fix(&mut c.image);
    }
    vmi
}

/// The compute container's resources: cpu (the VMI's request, else vCPUs / 10), memory (guest +
/// overhead), `/dev/kvm` and (with a pod network) `/dev/net/tun`; limits only where the VMI sets
/// them, plus the devices.
fn compute_resources(
    vmi: &VirtualMachineInstance,
    cluster: &ClusterConfig,
) -> Result<ResourceRequirements, RenderError> {
    let r = vmi.spec.domain.resources.as_ref();
    let requested = |what: &str| r.and_then(|r| r.requests.as_ref()?.get(what).cloned());
    let limited = |what: &str| r.and_then(|r| r.limits.as_ref()?.get(what).cloned());
    let guest = guest_memory(vmi)?;
    let overhead = memory_overhead(vmi, guest);
    let bytes = |path: &str, q: &Quantity| {
        kubevirt_api::quantity::bytes_of(q).map_err(|e| RenderError::Quantity {
            path: path.into(),
            message: e.to_string(),
        })
    };
    let memory_request = match requested("memory") {
        Some(q) => bytes("spec.domain.resources.requests.memory", &q)?,
        None => cluster.memory_request(guest),
    };
    let overcommit = r.and_then(|r| r.overcommit_guest_overhead) == Some(true);
    let memory_request = memory_request + if overcommit { 0 } else { overhead };
    let cpu = requested("cpu")
        .unwrap_or_else(|| Quantity(format!("{}m", cluster.cpu_request_millis(vcpus(vmi)))));
    let mut requests = BTreeMap::from([
        ("cpu".to_string(), cpu),
        ("memory".to_string(), memory(memory_request)),
        (KVM_RESOURCE.to_string(), Quantity("1".into())),
    ]);
    if crate::node::launcher::wants_pod_network(vmi) {
        requests.insert(TUN_RESOURCE.into(), Quantity("1".into()));
    }
    let mut limits: BTreeMap<String, Quantity> = requests
        .iter()
        .filter(|(k, _)| k.starts_with("devices.kubevirt.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(q) = limited("memory") {
        let b = bytes("spec.domain.resources.limits.memory", &q)?;
        limits.insert("memory".into(), memory(b + overhead));
    }
    if let Some(q) = limited("cpu") {
        limits.insert("cpu".into(), q);
    }
    Ok(ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        ..ResourceRequirements::default()
    })
}

/// A memory quantity: whole MiB as `NMi`, else bytes.
fn memory(bytes: u64) -> Quantity {
    if bytes.is_multiple_of(1 << 20) {
        Quantity(format!("{}Mi", bytes >> 20))
    } else {
        Quantity(bytes.to_string())
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests;
