//! A pod spec turned into CRI requests: the sandbox's and each container's configuration (env,
//! mounts, devices for the KubeVirt extended resources, cgroup limits, security context).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::env::env;
pub use super::env::{Downward, expand};
use super::quantity::{self, QuantityError};
use super::volumes::HostVolume;
use crate::cri::labels;
use crate::node::capacity::{KVM_RESOURCE, TUN_RESOURCE};

/// A pod field this node cannot honour; the pod's status shows it.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field path, e.g. `spec.containers[0].env[2].valueFrom`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// Whether it may go away by itself (a ConfigMap, Secret or key the environment names does
    /// not exist yet): the container waits (`CreateContainerConfigError`) and is retried.
    pub missing: bool,
}

impl From<QuantityError> for SpecError {
    fn from(e: QuantityError) -> Self {
        SpecError {
            field: e.field.clone(),
            message: format!("{:?} is not a valid quantity", e.value),
            missing: false,
        }
    }
}

pub(super) fn spec_err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
        missing: false,
    }
}

pub(super) fn missing(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        missing: true,
        ..spec_err(field, message)
    }
}

/// The pod's identity as CRI labels.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let m = &pod.metadata;
    HashMap::from([
        (labels::POD_NAME.into(), m.name.clone().unwrap_or_default()),
        (
            labels::POD_NAMESPACE.into(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (labels::POD_UID.into(), m.uid.clone().unwrap_or_default()),
        (labels::MANAGED_BY.into(), "true".into()),
    ])
}

/// The pod's uid.
pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Where the pod's container logs go: `<logs>/<ns>_<name>_<uid>` (upstream's layout).
pub fn log_dir(logs: &Path, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    logs.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        uid(pod)
    ))
}

/// The cgroup parent every container of the pod lives under (cgroupfs driver): below the
/// node's own directory, so that several local nodes on one host (the tests run a few at once)
/// never take each other's pods for their own.
pub fn cgroup_parent(node: &str, uid: &str) -> String {
    format!("{}/pod{uid}", node_cgroup(node))
}

/// The cgroup directory (relative to each hierarchy's root) of every pod of node `node`.
pub fn node_cgroup(node: &str) -> String {
    format!("/kubevirt-local/{node}")
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .chain(spec.map(|s| &s.containers).into_iter().flatten())
}

/// The sandbox's configuration (attempt `attempt`).
pub fn sandbox_config(pod: &Pod, attempt: u32, logs: &Path, node: &str) -> cri::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let m = &pod.metadata;
    let host_network = spec.host_network.unwrap_or(false);
    let privileged = all_containers(pod).any(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    });
    let mut port_mappings = Vec::new();
    for c in all_containers(pod) {
        for p in c.ports.iter().flatten() {
            if let Some(host_port) = p.host_port.filter(|h| *h > 0) {
                port_mappings.push(cri::PortMapping {
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => cri::Protocol::Udp,
                        Some("SCTP") => cri::Protocol::Sctp,
                        _ => cri::Protocol::Tcp,
                    } as i32,
                    container_port: p.container_port,
                    host_port,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let ns_mode = if host_network {
        cri::NamespaceMode::Node
    } else {
        cri::NamespaceMode::Pod
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid: uid(pod),
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network {
            String::new()
        } else {
            spec.hostname
                .clone()
                .unwrap_or_else(|| m.name.clone().unwrap_or_default())
        },
        log_directory: log_dir(logs, pod).to_string_lossy().into_owned(),
        dns_config: None,
        port_mappings,
        labels: pod_labels(pod),
        annotations: HashMap::from([(
            labels::GRACE_PERIOD.to_string(),
            spec.termination_grace_period_seconds
                .unwrap_or(30)
                .to_string(),
        )]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(node, &uid(pod)),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: ns_mode as i32,
                    pid: if spec.host_pid.unwrap_or(false) {
                        cri::NamespaceMode::Node
                    } else {
                        cri::NamespaceMode::Container
                    } as i32,
                    ipc: if spec.host_ipc.unwrap_or(false) {
                        cri::NamespaceMode::Node
                    } else {
                        cri::NamespaceMode::Pod
                    } as i32,
                    ..Default::default()
                }),
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        windows: None,
    }
}

fn resources(
    c: &Container,
    at: &str,
) -> Result<(cri::LinuxContainerResources, Vec<cri::Device>), SpecError> {
    let r = c.resources.clone().unwrap_or_default();
    let limits = r.limits.unwrap_or_default();
    let requests = r.requests.unwrap_or_default();
    let mut out = cri::LinuxContainerResources::default();
    let cpu_request = requests.get("cpu").or_else(|| limits.get("cpu"));
    out.cpu_shares = match cpu_request {
        Some(q) => (quantity::millicores(&format!("{at}.resources.requests.cpu"), &q.0)? * 1024
            / 1000)
            .max(2),
        None => 2,
    };
    if let Some(q) = limits.get("cpu") {
        out.cpu_period = 100_000;
        out.cpu_quota =
            (quantity::millicores(&format!("{at}.resources.limits.cpu"), &q.0)? * 100).max(1000);
    }
    if let Some(q) = limits.get("memory") {
        out.memory_limit_in_bytes =
            quantity::bytes(&format!("{at}.resources.limits.memory"), &q.0)?;
    }
    let wants = |name: &str| limits.contains_key(name) || requests.contains_key(name);
    let mut devices = Vec::new();
    let mut device = |path: &str| {
        devices.push(cri::Device {
            container_path: path.into(),
            host_path: path.into(),
            permissions: "rwm".into(),
        })
    };
    if wants(KVM_RESOURCE) {
        device("/dev/kvm");
    }
    if wants(TUN_RESOURCE) {
        device("/dev/net/tun");
    }
    Ok((out, devices))
}

fn security(pod: &Pod, c: &Container) -> cri::LinuxContainerSecurityContext {
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.unwrap_or_default();
    let user = sc.run_as_user.or(psc.run_as_user);
    let group = sc.run_as_group.or(psc.run_as_group);
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(cri::NamespaceOption {
            network: if pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false)
            {
                cri::NamespaceMode::Node
            } else {
                cri::NamespaceMode::Pod
            } as i32,
            pid: if pod.spec.as_ref().and_then(|s| s.host_pid).unwrap_or(false) {
                cri::NamespaceMode::Node
            } else {
                cri::NamespaceMode::Container
            } as i32,
            ..Default::default()
        }),
        run_as_user: user.map(|value| cri::Int64Value { value }),
        run_as_group: group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: psc.supplemental_groups.unwrap_or_default(),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        ..Default::default()
    }
}

/// The Block claims `c` lists in `volumeDevices`, as devices at their `devicePath` (read-only
/// ones readable only, as upstream).
fn block_devices(
    c: &Container,
    at: &str,
    volumes: &BTreeMap<String, HostVolume>,
) -> Result<Vec<cri::Device>, SpecError> {
    let mut out = Vec::new();
    for (i, d) in c.volume_devices.iter().flatten().enumerate() {
        let field = format!("{at}.volumeDevices[{i}]");
        let v = volumes.get(&d.name).ok_or_else(|| {
            spec_err(
                format!("{field}.name"),
                format!("no volume named {:?} in spec.volumes", d.name),
            )
        })?;
        if !v.block {
            return Err(spec_err(
                field,
                format!(
                    "volume {:?} has volumeMode Filesystem, but is specified in volumeDevices",
                    d.name
                ),
            ));
        }
        out.push(cri::Device {
            container_path: d.device_path.clone(),
            host_path: v.path.to_string_lossy().into_owned(),
            permissions: if v.read_only { "r" } else { "rwm" }.into(),
        });
    }
    Ok(out)
}

/// One container's configuration. `at` is its field path (`spec.containers[0]`).
pub fn container_config(
    pod: &Pod,
    c: &Container,
    at: &str,
    attempt: u32,
    volumes: &BTreeMap<String, HostVolume>,
    downward: &Downward,
) -> Result<cri::ContainerConfig, SpecError> {
    let env = env(pod, c, at, downward)?;
    let (res, devices) = resources(c, at)?;
    let mut mounts = Vec::new();
    for (i, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let v = volumes.get(&vm.name).ok_or_else(|| {
            spec_err(
                format!("{at}.volumeMounts[{i}].name"),
                format!("no volume named {:?} in spec.volumes", vm.name),
            )
        })?;
        if v.block {
            return Err(spec_err(
                format!("{at}.volumeMounts[{i}]"),
                format!(
                    "volume {:?} has volumeMode Block, but is specified in volumeMounts",
                    vm.name
                ),
            ));
        }
        let mut host = v.path.clone();
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(spec_err(
                    format!("{at}.volumeMounts[{i}].subPath"),
                    "must be a relative path without '..'",
                ));
            }
            host = host.join(sub);
            if !host.exists() {
                let _ = std::fs::create_dir_all(&host);
            }
        }
        mounts.push(cri::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: v.read_only || vm.read_only.unwrap_or(false),
            ..Default::default()
        });
    }
    let mut devices = devices;
    devices.extend(block_devices(c, at, volumes)?);
    let mut labels = pod_labels(pod);
    labels.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &env))
            .collect(),
        args: c.args.iter().flatten().map(|s| expand(s, &env)).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        devices,
        labels,
        annotations: HashMap::new(),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(res),
            security_context: Some(security(pod, c)),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": containers}
        }))
        .unwrap()
    }

    #[test]
    fn env_devices_and_limits() {
        let p = pod(json!([{
            "name": "c", "image": "i",
            "command": ["echo", "$(A)-$(NAME)", "$$(A)"],
            "env": [{"name": "A", "value": "x"},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi", "devices.kubevirt.io/kvm": "1"}}
        }]));
        let d = Downward {
            pod_ip: "10.88.0.5".into(),
            ..Default::default()
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let cfg = container_config(&p, c, "spec.containers[0]", 2, &BTreeMap::new(), &d).unwrap();
        assert_eq!(cfg.command, ["echo", "x-p", "$(A)"]);
        assert_eq!(cfg.envs[2].value, "10.88.0.5");
        assert_eq!(cfg.devices[0].host_path, "/dev/kvm");
        let r = cfg.linux.unwrap().resources.unwrap();
        assert_eq!(
            (r.cpu_quota, r.cpu_period, r.cpu_shares),
            (50_000, 100_000, 512)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(cfg.log_path, "c/2.log");
        assert_eq!(cfg.labels[labels::POD_UID], "u1");
    }

    #[test]
    fn block_claims_are_devices_and_only_devices() {
        let p = pod(json!([{
            "name": "c", "image": "i",
            "volumeDevices": [{"name": "blk", "devicePath": "/dev/xvda"}],
            "volumeMounts": [{"name": "fs", "mountPath": "/data"}]
        }]));
        let mut volumes = BTreeMap::from([
            (
                "blk".to_string(),
                HostVolume {
                    path: "/dev/loop7".into(),
                    read_only: false,
                    block: true,
                    refresh_at: None,
                },
            ),
            (
                "fs".to_string(),
                HostVolume {
                    path: "/srv/pv".into(),
                    read_only: true,
                    block: false,
                    refresh_at: None,
                },
            ),
        ]);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let at = "spec.containers[0]";
        let cfg = container_config(&p, c, at, 0, &volumes, &Downward::default()).unwrap();
        assert_eq!(
            cfg.devices,
            [cri::Device {
                container_path: "/dev/xvda".into(),
                host_path: "/dev/loop7".into(),
                permissions: "rwm".into(),
            }]
        );
        assert_eq!(cfg.mounts[0].host_path, "/srv/pv");
        assert!(cfg.mounts[0].readonly);
        // A read-only Block claim is a readable device only (upstream's "r").
        volumes.get_mut("blk").unwrap().read_only = true;
        let cfg = container_config(&p, c, at, 0, &volumes, &Downward::default()).unwrap();
        assert_eq!(cfg.devices[0].permissions, "r");
        // A Filesystem claim as a device, a Block one as a mount: refused, naming the field.
        volumes.get_mut("blk").unwrap().block = false;
        let e = container_config(&p, c, at, 0, &volumes, &Downward::default()).unwrap_err();
        assert_eq!(e.field, "spec.containers[0].volumeDevices[0]");
        assert!(e.message.contains("volumeMode Filesystem"), "{e}");
        volumes.get_mut("fs").unwrap().block = true;
        let e = container_config(&p, c, at, 0, &volumes, &Downward::default()).unwrap_err();
        assert_eq!(e.field, "spec.containers[0].volumeMounts[0]");
    }

    #[test]
    fn unsupported_fields_are_named() {
        let p = pod(json!([{
            "name": "c", "image": "i",
            "env": [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]
        }]));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = container_config(
            &p,
            c,
            "spec.containers[0]",
            0,
            &BTreeMap::new(),
            &Downward::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.field,
            "spec.containers[0].env[0].valueFrom.resourceFieldRef"
        );
        let p = pod(
            json!([{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]),
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = container_config(
            &p,
            c,
            "spec.containers[0]",
            0,
            &BTreeMap::new(),
            &Downward::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.containers[0].volumeMounts[0].name");
    }
}
