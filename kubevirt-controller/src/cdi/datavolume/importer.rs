//! The importer pod of a DataVolume (upstream's `importer-<claim>`): one `importer` container
//! running `kubevirt-controller cdi-importer` with upstream's environment (source, endpoint,
//! content type, size, owner, filesystem overhead, TLS, credentials, extra headers), the claim
//! at `/data` (Filesystem) or `/dev/cdi-block-volume` (Block), restarted on failure so a failed
//! import is retried with the kubelet's backoff. A `registry` source with `pullMethod: node`
//! adds the user's image as the `server` container and an `init` container ([`node_pull`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, PersistentVolumeClaim,
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, SecretKeySelector, SecretVolumeSource, Volume,
    VolumeDevice, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubevirt_api::cdi::v1beta1::DataVolume;

use super::DataVolumeConfig;
use super::claim::{owner, volume_mode};

/// Where the importer binary is in the importer image.
pub const IMPORTER_BINARY: &str = "/usr/bin/kubevirt-controller";
/// The claim's mount path in the importer (Filesystem).
pub const DATA_DIR: &str = "/data";
/// The claim's device path in the importer (Block).
pub const BLOCK_DEVICE: &str = "/dev/cdi-block-volume";
/// Where a clone's source claim is mounted (Filesystem).
pub const CLONE_SOURCE_DIR: &str = "/source";
/// A clone's source claim's device path (Block).
pub const CLONE_SOURCE_DEVICE: &str = "/dev/cdi-clone-source";
/// Where `certConfigMap` is mounted.
pub const CERT_DIR: &str = "/certs";
/// Where each `secretExtraHeaders` Secret is mounted (`<dir>/<index>`).
pub const SECRET_HEADERS_DIR: &str = "/extraheaders";
/// The port of the importer's progress metrics.
pub const METRICS_PORT: u16 = 8443;

/// Where a DataVolume's data comes from, as far as its importer pod is concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// `http`: a URL.
    Http(kubevirt_api::cdi::v1beta1::DataVolumeSourceHTTP),
    /// `registry`: the importer pulls the image (`pullMethod: pod`, the default), or the node
    /// does and the image's disk is served to the importer (`pullMethod: node`).
    Registry(kubevirt_api::cdi::v1beta1::DataVolumeSourceRegistry),
    /// `blank`: an empty disk.
    Blank,
    /// `pvc`: a copy of a claim of the same namespace (upstream's host-assisted clone, done
    /// by one importer pod that mounts both claims).
    Clone(kubevirt_api::cdi::v1beta1::DataVolumeSourcePVC),
    /// `upload`: what a client sends through the upload proxy (a `cdi-upload-<dv>` pod).
    Upload,
}

impl Source {
    /// The phases of the pod's work: scheduled, in progress (`Import…` or `Clone…`).
    pub fn phases(&self) -> (&'static str, &'static str) {
        match self {
            Source::Clone(_) => ("CloneScheduled", "CloneInProgress"),
            Source::Upload => ("UploadScheduled", "UploadReady"),
            _ => ("ImportScheduled", "ImportInProgress"),
        }
    }
}

/// The source of `dv`, or why this controller cannot fill it (yet).
pub fn source_of(dv: &DataVolume) -> Result<Source, String> {
    let Some(s) = &dv.spec.source else {
        return Err(match &dv.spec.source_ref {
            Some(r) => format!(
                "spec.sourceRef: {} {:?} sources are not supported by kubevirt-rs yet",
                r.kind, r.name
            ),
            None => "spec.source: a DataVolume needs a source".into(),
        });
    };
    if let Some(h) = &s.http {
        return Ok(Source::Http(h.clone()));
    }
    if let Some(r) = &s.registry {
        return registry_source(r).map(Source::Registry);
    }
    if s.blank.is_some() {
        return Ok(Source::Blank);
    }
    if s.upload.is_some() {
        return Ok(Source::Upload);
    }
    if let Some(p) = &s.pvc {
        let here = dv.metadata.namespace.as_deref().unwrap_or_default();
        if !p.namespace.is_empty() && p.namespace != here {
            return Err(format!(
                "spec.source.pvc.namespace: cloning from another namespace ({}) is not supported by kubevirt-rs yet; clone within {here}",
                p.namespace
            ));
        }
        return Ok(Source::Clone(p.clone()));
    }
    let kind = [
        (s.s3.is_some(), "s3"),
        (s.gcs.is_some(), "gcs"),
        (s.imageio.is_some(), "imageio"),
        (s.vddk.is_some(), "vddk"),
        (s.snapshot.is_some(), "snapshot"),
    ]
    .into_iter()
    .find_map(|(set, k)| set.then_some(k))
    .unwrap_or("an empty source");
    Err(format!(
        "spec.source: {kind} is not supported by kubevirt-rs yet (http, registry, blank, pvc and upload are)"
    ))
}

/// A registry source this controller can import, or why not.
fn registry_source(
    r: &kubevirt_api::cdi::v1beta1::DataVolumeSourceRegistry,
) -> Result<kubevirt_api::cdi::v1beta1::DataVolumeSourceRegistry, String> {
    if r.image_stream.is_some() {
        return Err(
            "spec.source.registry.imageStream: OpenShift image streams are not supported by kubevirt-rs; give spec.source.registry.url (docker://...)".into(),
        );
    }
    match r.pull_method.as_deref().unwrap_or("pod") {
        "pod" | "node" => {}
        other => {
            return Err(format!(
                "spec.source.registry.pullMethod: {other:?} is not one of pod, node"
            ));
        }
    }
    let url = r.url.as_deref().unwrap_or_default();
    if url.is_empty() {
        return Err(
            "spec.source.registry.url: Required value (docker://host/repository:tag)".into(),
        );
    }
    let image = url
        .strip_prefix("docker://")
        .ok_or_else(|| format!("spec.source.registry.url: {url:?} must start with docker://"))?;
    image
        .parse::<kubevirt_oci::ImageRef>()
        .map_err(|e| format!("spec.source.registry.url: {e}"))?;
    Ok(r.clone())
}

/// The registry host of a registry source's URL (`host:port`, `docker.io` for short names).
pub fn registry_host(r: &kubevirt_api::cdi::v1beta1::DataVolumeSourceRegistry) -> Option<String> {
    let url = r.url.as_deref()?.strip_prefix("docker://")?;
    url.parse::<kubevirt_oci::ImageRef>()
        .ok()
        .map(|i| i.registry)
}

/// The IP of a pod (an importer or upload server) once its container runs.
pub fn running_ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    let running = status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    running.then_some(status.pod_ip.as_deref()?)
}

/// `ip:port`, with an IPv6 address in brackets.
pub fn socket_address(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The importer pod's name for DataVolume `name`.
pub fn pod_name(name: &str) -> String {
    format!("importer-{name}")
}

/// The upload server pod's name for claim `name` (upstream's `cdi-upload-<claim>`).
pub fn upload_pod_name(name: &str) -> String {
    format!("cdi-upload-{name}")
}

/// The name of the pod that fills DataVolume `name` from `source`.
pub fn pod_name_for(source: Option<&Source>, name: &str) -> String {
    match source {
        Some(Source::Upload) => upload_pod_name(name),
        _ => pod_name(name),
    }
}

/// The importer pod that fills `claim` for `dv` from `source` (`source_block`: a clone's
/// source claim is a Block claim).
pub fn pod_for(
    dv: &DataVolume,
    source: &Source,
    source_block: bool,
    claim: &PersistentVolumeClaim,
    config: &DataVolumeConfig,
) -> Pod {
    let name = dv.metadata.name.clone().unwrap_or_default();
    let block = volume_mode(dv) == "Block";
    let env_value = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let size = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    let node_pull = match source {
        Source::Registry(r) if node_pull::is_node_pull(r) => Some(r),
        _ => None,
    };
    let (kind, endpoint) = match source {
        Source::Http(h) => ("http", h.url.clone()),
        Source::Registry(r) => ("registry", r.url.clone().unwrap_or_default()),
        Source::Blank | Source::Upload => ("none", String::new()),
        Source::Clone(_) if source_block => ("file", CLONE_SOURCE_DEVICE.into()),
        Source::Clone(_) => ("file", format!("{CLONE_SOURCE_DIR}/disk.img")),
    };
    let mut env = vec![
        env_value("IMPORTER_SOURCE", kind.into()),
        env_value("IMPORTER_ENDPOINT", endpoint),
        env_value(
            "IMPORTER_CONTENTTYPE",
            dv.spec
                .content_type
                .clone()
                .unwrap_or_else(|| "kubevirt".into()),
        ),
        env_value("IMPORTER_IMAGE_SIZE", size),
        env_value("OWNER_UID", dv.metadata.uid.clone().unwrap_or_default()),
        env_value(
            "FILESYSTEM_OVERHEAD",
            if block {
                "0".into()
            } else {
                config.filesystem_overhead.to_string()
            },
        ),
    ];
    let mut volumes = vec![Volume {
        name: "cdi-data-vol".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.metadata.name.clone().unwrap_or_default(),
            read_only: Some(false),
        }),
        ..Default::default()
    }];
    let mut mounts = Vec::new();
    let mut devices = Vec::new();
    if let Source::Clone(p) = source {
        volumes.push(Volume {
            name: "cdi-clone-source".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: p.name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        if source_block {
            devices.push(VolumeDevice {
                name: "cdi-clone-source".into(),
                device_path: CLONE_SOURCE_DEVICE.into(),
            });
        } else {
            mounts.push(mount("cdi-clone-source", CLONE_SOURCE_DIR, true));
        }
    }
    let (cert_config_map, secret_ref, insecure, headers, secret_headers) = match source {
        Source::Http(h) => (
            h.cert_config_map.clone(),
            h.secret_ref.clone(),
            h.insecure_skip_verify.unwrap_or(false),
            h.extra_headers.clone().unwrap_or_default(),
            h.secret_extra_headers.clone().unwrap_or_default(),
        ),
        // The node pulls with its own credentials and CAs; the importer reads plain HTTP.
        Source::Registry(_) if node_pull.is_some() => (None, None, false, Vec::new(), Vec::new()),
        // Upstream: INSECURE_TLS when the registry is one of CDIConfig's insecureRegistries.
        Source::Registry(r) => (
            r.cert_config_map.clone(),
            r.secret_ref.clone(),
            registry_host(r).is_some_and(|h| config.insecure_registries.contains(&h)),
            Vec::new(),
            Vec::new(),
        ),
        Source::Blank | Source::Clone(_) | Source::Upload => {
            (None, None, false, Vec::new(), Vec::new())
        }
    };
    env.push(env_value("INSECURE_TLS", insecure.to_string()));
    if let Source::Http(h) = source
        && let Some(sum) = h.checksum.as_ref().filter(|c| !c.is_empty())
    {
        env.push(env_value(
            crate::cdi::import::env::vars::CHECKSUM,
            sum.clone(),
        ));
    }
    if let Some(cm) = cert_config_map {
        volumes.push(Volume {
            name: "cdi-cert-vol".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: cm,
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("cdi-cert-vol", CERT_DIR, true));
        env.push(env_value("IMPORTER_CERT_DIR", CERT_DIR.into()));
    }
    if let Some(secret) = secret_ref {
        for (var, key) in [
            ("IMPORTER_ACCESS_KEY_ID", "accessKeyId"),
            ("IMPORTER_SECRET_KEY", "secretKey"),
        ] {
            env.push(EnvVar {
                name: var.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: key.into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            });
        }
    }
    if node_pull.is_some() {
        // The server's URL replaces the image's; the ready and done files are shared.
        let overrides = node_pull::importer_env();
        env.retain(|e| !overrides.iter().any(|o| o.name == e.name));
        env.extend(overrides);
        volumes.push(node_pull::volume());
        mounts.push(node_pull::mount());
    }
    for (i, h) in headers.into_iter().enumerate() {
        env.push(env_value(&format!("IMPORTER_EXTRA_HEADER_{i}"), h));
    }
    for (i, secret) in secret_headers.into_iter().enumerate() {
        let vol = format!("cdi-secret-extra-headers-vol-{i}");
        volumes.push(Volume {
            name: vol.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount(&vol, &format!("{SECRET_HEADERS_DIR}/{i}"), true));
    }
    let (container_name, subcommand, port) = match source {
        Source::Upload => ("cdi-upload-server", "cdi-uploadserver", "uploader"),
        _ => ("importer", "cdi-importer", "metrics"),
    };
    let mut container = Container {
        name: container_name.into(),
        image: Some(config.importer_image.clone()),
        image_pull_policy: Some(config.pull_policy.clone()),
        command: Some(vec![IMPORTER_BINARY.into(), subcommand.into()]),
        env: Some(env),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            name: Some(port.into()),
            container_port: i32::from(METRICS_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    if block {
        devices.insert(
            0,
            VolumeDevice {
                name: "cdi-data-vol".into(),
                device_path: BLOCK_DEVICE.into(),
            },
        );
    } else {
        mounts.insert(0, mount("cdi-data-vol", DATA_DIR, false));
    }
    container.volume_mounts = (!mounts.is_empty()).then_some(mounts);
    container.volume_devices = (!devices.is_empty()).then_some(devices);
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), "containerized-data-importer".to_string());
    labels.insert(
        "cdi.kubevirt.io".to_string(),
        match source {
            Source::Upload => "cdi-upload-server",
            _ => "importer",
        }
        .to_string(),
    );
    labels.insert(
        "app.kubernetes.io/component".to_string(),
        "storage".to_string(),
    );
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name_for(Some(source), &name)),
            namespace: dv.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner(dv)]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            init_containers: node_pull.map(|_| {
                vec![node_pull::init_container(
                    &config.importer_image,
                    &config.pull_policy,
                )]
            }),
            containers: std::iter::once(container)
                .chain(node_pull.map(|r| node_pull::server_container(r, &config.pull_policy)))
                .collect(),
            volumes: Some(volumes),
            restart_policy: Some("OnFailure".into()),
            priority_class_name: dv.spec.priority_class_name.clone(),
            automount_service_account_token: Some(false),
            ..Default::default()
        }),
        status: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

pub mod node_pull;

#[cfg(test)]
mod tests;
