//! A pod's volumes on the host: `emptyDir` (a directory under the pod's directory), `hostPath`
//! (the path itself), `configMap` and `secret` (their keys written as files, mounted read-only),
//! `downwardAPI` and `projected` (files made from the pod, ConfigMaps, Secrets and service
//! account tokens, see [`super::projected`]), `persistentVolumeClaim` (the directory or block
//! device of the claim's local volume, see [`super::claims`]). Any other volume type is refused
//! with the field that names it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};
use kube::Api;

use super::affinity::NodeFacts;
use super::claims::{self, ClaimError};
use super::projected;

/// Why a pod's volumes cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume type is not supported here.
    #[error(
        "{field}: unsupported volume type (this node supports emptyDir, hostPath, configMap, secret, downwardAPI, projected and persistentVolumeClaim)"
    )]
    Unsupported {
        /// `spec.volumes[i]`.
        field: String,
    },
    /// A referenced ConfigMap or Secret is missing or unreadable.
    #[error("{field}: {what} {name:?}: {source}")]
    Source {
        /// `spec.volumes[i].configMap`.
        field: String,
        /// `configmap` or `secret`.
        what: &'static str,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: Box<kube::Error>,
    },
    /// A claim cannot be used (yet): missing, unbound, or its volume is not usable here.
    #[error("{field} ({volume}): {source}")]
    Claim {
        /// `spec.volumes[i]`.
        field: String,
        /// The pod's volume.
        volume: String,
        /// Why.
        #[source]
        source: Box<ClaimError>,
    },
    /// A downward API item names a field or resource that cannot be exposed.
    #[error("{field}: {value:?} cannot be exposed in a volume")]
    BadField {
        /// The field.
        field: String,
        /// What it names, or why it is wrong.
        value: String,
    },
    /// A key or path is not a relative path inside the volume.
    #[error("{field}: {path:?} must be a relative path without '..'")]
    BadPath {
        /// The field.
        field: String,
        /// The path.
        path: String,
    },
    /// A file or directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl VolumeError {
    /// Whether retrying later may help (a missing ConfigMap may appear, a claim be bound).
    pub fn transient(&self) -> bool {
        matches!(
            self,
            VolumeError::Source { .. } | VolumeError::Io { .. } | VolumeError::Claim { .. }
        )
    }

    /// The message of the `FailedMount` event upstream's kubelet records for this failure, if
    /// it records one.
    pub fn failed_mount(&self) -> Option<String> {
        let VolumeError::Claim { volume, source, .. } = self else {
            return None;
        };
        Some(format!(
            "Unable to attach or mount volumes: unmounted volumes=[{volume}]: {source}"
        ))
    }
}

/// A prepared volume: where it is on the host and whether it must be mounted read-only.
#[derive(Debug, Clone)]
pub struct HostVolume {
    /// The host path.
    pub path: PathBuf,
    /// configMap and secret volumes are always read-only.
    pub read_only: bool,
    /// A Block claim: `path` is a device node, given to containers by `volumeDevices`.
    pub block: bool,
    /// When the service account tokens it holds are to be renewed ([`refresh`]).
    pub refresh_at: Option<std::time::Instant>,
}

impl HostVolume {
    fn dir(path: PathBuf, read_only: bool) -> Self {
        HostVolume {
            path,
            read_only,
            block: false,
            refresh_at: None,
        }
    }
}

/// The first unsupported volume, if any: checked before anything runs.
pub fn check(pod: &Pod) -> Result<(), VolumeError> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (i, v) in volumes.into_iter().flatten().enumerate() {
        if v.empty_dir.is_none()
            && v.host_path.is_none()
            && v.config_map.is_none()
            && v.secret.is_none()
            && v.persistent_volume_claim.is_none()
            && v.downward_api.is_none()
            && v.projected.is_none()
        {
            return Err(VolumeError::Unsupported {
                field: format!("spec.volumes[{i}] ({})", v.name),
            });
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn safe_rel(field: &str, p: &str) -> Result<(), VolumeError> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || Path::new(p)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
    if bad {
        return Err(VolumeError::BadPath {
            field: field.to_string(),
            path: p.to_string(),
        });
    }
    Ok(())
}

/// A file of a volume: its path inside the volume, its bytes and its mode.
pub(super) type VolumeFile = (String, Vec<u8>, i32);

/// The files of `data` that `items` select (all keys when there are none), checked to stay
/// inside the volume.
pub(super) fn select(
    field: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: i32,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let files: Vec<VolumeFile> = match items {
        Some(items) => items
            .iter()
            .filter_map(|it| {
                data.get(&it.key)
                    .map(|v| (it.path.clone(), v.clone(), it.mode.unwrap_or(mode)))
            })
            .collect(),
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), mode))
            .collect(),
    };
    for (rel, _, _) in &files {
        safe_rel(field, rel)?;
    }
    Ok(files)
}

fn write_file(path: &Path, bytes: &[u8], mode: i32) -> Result<(), VolumeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(path, bytes).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode as u32 & 0o777))
        .map_err(io(path))
}

/// Makes `dir` hold exactly `files` (written aside, then swapped in).
pub(super) fn write_dir(dir: &Path, files: Vec<VolumeFile>) -> Result<(), VolumeError> {
    let tmp = dir.with_extension("new");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    for (rel, bytes, mode) in files {
        write_file(&tmp.join(&rel), &bytes, mode)?;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(io(dir))
}

/// Replaces `files` inside `dir` in place, each atomically (containers have the directory
/// mounted: a swapped directory would not reach them).
pub(super) fn rewrite_in_place(dir: &Path, files: Vec<VolumeFile>) -> Result<(), VolumeError> {
    for (rel, bytes, mode) in files {
        let path = dir.join(&rel);
        let tmp = dir.join(format!(".{}.new", rel.replace('/', "_")));
        write_file(&tmp, &bytes, mode)?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}

/// The data `extract` takes from object `ns/name` of kind `K` (`what` in messages), none when
/// it is missing and `optional`.
async fn source_data<K>(
    client: &kube::Client,
    (ns, name): (&str, &str),
    optional: Option<bool>,
    (field, what): (String, &'static str),
    extract: impl FnOnce(K) -> BTreeMap<String, Vec<u8>>,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.get(name).await {
        Ok(obj) => Ok(extract(obj)),
        Err(kube::Error::Api(e)) if e.code == 404 && optional == Some(true) => Ok(BTreeMap::new()),
        Err(source) => Err(VolumeError::Source {
            field,
            what,
            name: name.to_string(),
            source: Box::new(source),
        }),
    }
}

/// The data of ConfigMap `ns/name` (none when it is missing and `optional`).
pub(super) async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: Option<bool>,
    field: &str,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    let at = (format!("{field}.configMap"), "configmap");
    source_data(client, (ns, name), optional, at, |c: ConfigMap| {
        let text = c.data.unwrap_or_default().into_iter();
        let binary = c.binary_data.unwrap_or_default().into_iter();
        text.map(|(k, v)| (k, v.into_bytes()))
            .chain(binary.map(|(k, v)| (k, v.0)))
            .collect()
    })
    .await
}

/// The data of Secret `ns/name` (none when it is missing and `optional`).
pub(super) async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: Option<bool>,
    field: &str,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    let at = (format!("{field}.secret"), "secret");
    source_data(client, (ns, name), optional, at, |s: Secret| {
        let data = s.data.unwrap_or_default().into_iter();
        let text = s.string_data.unwrap_or_default().into_iter();
        data.map(|(k, v)| (k, v.0))
            .chain(text.map(|(k, v)| (k, v.into_bytes())))
            .collect()
    })
    .await
}

/// Where a pod's volumes are prepared.
struct Target<'a> {
    client: &'a kube::Client,
    pod: &'a Pod,
    ns: &'a str,
    dir: &'a Path,
    node: &'a str,
    facts: Option<NodeFacts>,
}

async fn prepare_one(t: &mut Target<'_>, i: usize, v: &Volume) -> Result<HostVolume, VolumeError> {
    let (client, ns, dir) = (t.client, t.ns, t.dir);
    let field = format!("spec.volumes[{i}]");
    if let Some(source) = &v.persistent_volume_claim {
        let fail = |source| VolumeError::Claim {
            field: field.clone(),
            volume: v.name.clone(),
            source: Box::new(source),
        };
        let c = claims::resolve(client, ns, source, t.node, &mut t.facts)
            .await
            .map_err(fail)?;
        claims::check_use(t.pod, &v.name, c.block).map_err(|problem| {
            fail(ClaimError {
                namespace: ns.to_string(),
                claim: source.claim_name.clone(),
                problem,
            })
        })?;
        return Ok(HostVolume {
            path: c.path,
            read_only: c.read_only,
            block: c.block,
            refresh_at: None,
        });
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        if h.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
        return Ok(HostVolume::dir(path, false));
    }
    let path = dir.join(&v.name);
    if v.empty_dir.is_some() {
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        return Ok(HostVolume::dir(path, false));
    }
    if let Some(cm) = &v.config_map {
        let data = config_map_data(client, ns, &cm.name, cm.optional, &field).await?;
        let files = select(
            &field,
            &data,
            cm.items.as_ref(),
            cm.default_mode.unwrap_or(0o644),
        )?;
        write_dir(&path, files)?;
        return Ok(HostVolume::dir(path, true));
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(client, ns, &name, s.optional, &field).await?;
        let files = select(
            &field,
            &data,
            s.items.as_ref(),
            s.default_mode.unwrap_or(0o644),
        )?;
        write_dir(&path, files)?;
        return Ok(HostVolume::dir(path, true));
    }
    if let Some(d) = &v.downward_api {
        let files = projected::downward_files(t.pod, &field, d.items.as_deref(), d.default_mode)?;
        write_dir(&path, files)?;
        return Ok(HostVolume::dir(path, true));
    }
    if let Some(p) = &v.projected {
        let made = projected::project(client, t.pod, &field, p).await?;
        write_dir(&path, made.files)?;
        let mut volume = HostVolume::dir(path, true);
        volume.refresh_at = made.refresh_at;
        return Ok(volume);
    }
    Err(VolumeError::Unsupported { field })
}

/// Prepares every volume of `pod` under `dir` (the pod's volume directory) on node `node`.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    dir: &Path,
    node: &str,
) -> Result<BTreeMap<String, HostVolume>, VolumeError> {
    check(pod)?;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut target = Target {
        client,
        pod,
        ns: &ns,
        dir,
        node,
        facts: None,
    };
    let mut out = BTreeMap::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (i, v) in volumes.into_iter().flatten().enumerate() {
        out.insert(v.name.clone(), prepare_one(&mut target, i, v).await?);
    }
    Ok(out)
}

/// Renews the service account tokens of `pod`'s projected volumes in `volumes` that are due at
/// `now` (upstream renews at 80% of a token's life), in place, and when each is due next.
pub async fn refresh(
    client: &kube::Client,
    pod: &Pod,
    volumes: &mut BTreeMap<String, HostVolume>,
    now: std::time::Instant,
) -> Result<(), VolumeError> {
    let specs = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (i, v) in specs.into_iter().flatten().enumerate() {
        let (Some(p), Some(host)) = (&v.projected, volumes.get_mut(&v.name)) else {
            continue;
        };
        if host.refresh_at.is_none_or(|t| t > now) {
            continue;
        }
        let made = projected::tokens(client, pod, &format!("spec.volumes[{i}]"), p).await?;
        rewrite_in_place(&host.path, made.files)?;
        host.refresh_at = made.refresh_at;
    }
    Ok(())
}

/// When the first of `volumes` is due for a token renewal.
pub fn next_refresh(volumes: &BTreeMap<String, HostVolume>) -> Option<std::time::Instant> {
    volumes.values().filter_map(|v| v.refresh_at).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_volume_names_the_field() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [
                {"name": "a", "emptyDir": {}},
                {"name": "b", "nfs": {"server": "x", "path": "/"}}
            ]}
        }))
        .unwrap();
        let e = check(&pod).unwrap_err().to_string();
        assert!(
            e.starts_with("spec.volumes[1] (b): unsupported volume type"),
            "{e}"
        );
    }

    #[test]
    fn files_stay_inside() {
        let dir = std::env::temp_dir().join(format!("kubelet-vol-{}", std::process::id()));
        let mut data = BTreeMap::new();
        data.insert("a".to_string(), b"1".to_vec());
        write_dir(&dir, select("f", &data, None, 0o644).unwrap()).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        let items: Vec<KeyToPath> =
            serde_json::from_value(serde_json::json!([{"key": "a", "path": "../x"}])).unwrap();
        assert!(select("f", &data, Some(&items), 0o644).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        let _ = std::fs::remove_dir_all(dir.with_extension("new"));
    }
}
