//! `downwardAPI` and `projected` volumes, as upstream's kubelet writes them: the pod's own
//! fields (`metadata.name`, `namespace`, `uid`, `labels`, `annotations`) as files, and projected
//! sources (`serviceAccountToken`, `configMap`, `secret`, `downwardAPI`) merged into one
//! directory. A service account token is asked of the API server's TokenRequest API, bound to the
//! pod, and renewed when 80% of its life has passed (or after 24 hours), as upstream's token
//! manager does. This is how `/var/run/secrets/kubernetes.io/serviceaccount` reaches pods.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, Pod, ProjectedVolumeSource, ServiceAccount,
};
use kube::Api;
use kube::api::PostParams;

use super::volumes::{VolumeError, VolumeFile, config_map_data, secret_data, select};

/// A token's life when the source does not say (upstream's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// The longest a token goes unrenewed.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

/// A projected volume's files and when its tokens are to be renewed.
#[derive(Debug, Default)]
pub struct Projection {
    /// The files.
    pub files: Vec<VolumeFile>,
    /// When the first token is due for renewal (none without tokens).
    pub refresh_at: Option<Instant>,
}

/// `k="v"` lines of a label or annotation map, sorted, as upstream formats them.
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `fieldPath` of `pod` for a downward API file.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let one = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        p if p.starts_with("metadata.labels['") => one("metadata.labels['", m.labels.as_ref())?,
        p if p.starts_with("metadata.annotations['") => {
            one("metadata.annotations['", m.annotations.as_ref())?
        }
        _ => return None,
    })
}

/// The files of downward API `items` of `pod` (`field` names the volume in errors).
pub fn downward_files(
    pod: &Pod,
    field: &str,
    items: Option<&[DownwardAPIVolumeFile]>,
    default_mode: Option<i32>,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let mode = default_mode.unwrap_or(0o644);
    let mut data = BTreeMap::new();
    let mut modes = Vec::new();
    for (j, item) in items.into_iter().flatten().enumerate() {
        let at = format!("{field}.downwardAPI.items[{j}]");
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => {
                field_value(pod, &f.field_path).ok_or_else(|| VolumeError::BadField {
                    field: format!("{at}.fieldRef.fieldPath"),
                    value: f.field_path.clone(),
                })?
            }
            (None, Some(r)) => {
                super::resources::value(pod, r).map_err(|value| VolumeError::BadField {
                    field: format!("{at}.resourceFieldRef"),
                    value,
                })?
            }
            (None, None) => {
                return Err(VolumeError::BadField {
                    field: at,
                    value: "neither fieldRef nor resourceFieldRef".into(),
                });
            }
        };
        data.insert(item.path.clone(), value.into_bytes());
        modes.push((item.path.clone(), item.mode.unwrap_or(mode)));
    }
    let mut files = select(field, &data, None, mode)?;
    for (rel, _, m) in files.iter_mut() {
        if let Some((_, item_mode)) = modes.iter().find(|(p, _)| p == rel) {
            *m = *item_mode;
        }
    }
    Ok(files)
}

/// A token for the pod's service account, bound to the pod, and when to renew it.
async fn token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<&str>,
    seconds: Option<i64>,
) -> Result<(String, Instant), kube::Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let seconds = seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
    let audiences: Vec<&str> = audience.filter(|a| !a.is_empty()).into_iter().collect();
    let request = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences, "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                "name": pod.metadata.name, "uid": pod.metadata.uid}},
    });
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let issued = Instant::now();
    let answer: serde_json::Value = api
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await?;
    let token = answer["status"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let life = Duration::from_secs(seconds.max(0) as u64);
    Ok((token, issued + (life * 4 / 5).min(MAX_TOKEN_AGE)))
}

fn token_error(field: &str, source: kube::Error) -> VolumeError {
    VolumeError::Source {
        field: format!("{field}.projected.serviceAccountToken"),
        what: "serviceaccount token",
        name: "TokenRequest".into(),
        source: Box::new(source),
    }
}

/// The files of projected volume `p` of `pod` (`field` names it in errors).
pub async fn project(
    client: &kube::Client,
    pod: &Pod,
    field: &str,
    p: &ProjectedVolumeSource,
) -> Result<Projection, VolumeError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mode = p.default_mode.unwrap_or(0o644);
    let sources = async {
        let mut files = Vec::new();
        for (j, source) in p.sources.iter().flatten().enumerate() {
            let at = format!("{field}.projected.sources[{j}]");
            if let Some(cm) = &source.config_map {
                let data = config_map_data(client, &ns, &cm.name, cm.optional, &at).await?;
                files.extend(select(&at, &data, cm.items.as_ref(), mode)?);
            } else if let Some(s) = &source.secret {
                let data = secret_data(client, &ns, &s.name, s.optional, &at).await?;
                files.extend(select(&at, &data, s.items.as_ref(), mode)?);
            } else if let Some(d) = &source.downward_api {
                files.extend(downward_files(pod, &at, d.items.as_deref(), Some(mode))?);
            } else if source.service_account_token.is_some() {
                continue; // with the renewals
            } else {
                return Err(VolumeError::Unsupported { field: at });
            }
        }
        Ok(files)
    };
    // The token request and the other sources' reads are independent round trips (every
    // pod's `kube-api-access` volume has both): made at once.
    let (files, tokens) = futures::join!(sources, tokens(client, pod, field, p));
    let mut out = Projection {
        files: files?,
        ..Default::default()
    };
    let tokens = tokens?;
    out.files.extend(tokens.files);
    out.refresh_at = tokens.refresh_at;
    Ok(out)
}

/// Only the token files of projected volume `p` (what a renewal rewrites).
pub async fn tokens(
    client: &kube::Client,
    pod: &Pod,
    field: &str,
    p: &ProjectedVolumeSource,
) -> Result<Projection, VolumeError> {
    // Token files are readable by their owner only, unless the volume says otherwise.
    let mode = p.default_mode.unwrap_or(0o600);
    let mut out = Projection::default();
    for (j, source) in p.sources.iter().flatten().enumerate() {
        let Some(t) = &source.service_account_token else {
            continue;
        };
        let at = format!("{field}.projected.sources[{j}]");
        let (token, due) = token(client, pod, t.audience.as_deref(), t.expiration_seconds)
            .await
            .map_err(|e| token_error(&at, e))?;
        let mut file = select(
            &at,
            &BTreeMap::from([(t.path.clone(), token.into_bytes())]),
            None,
            mode,
        )?;
        out.files.append(&mut file);
        out.refresh_at = Some(out.refresh_at.map_or(due, |d: Instant| d.min(due)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                "labels": {"b": "2", "a": "x\"y"}, "annotations": {"k": "v"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]},
        }))
        .unwrap()
    }

    fn items(v: serde_json::Value) -> Vec<DownwardAPIVolumeFile> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn downward_files_are_upstreams_format() {
        let files = downward_files(
            &pod(),
            "spec.volumes[0]",
            Some(&items(serde_json::json!([
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}, "mode": 0o600},
                {"path": "k", "fieldRef": {"fieldPath": "metadata.annotations['k']"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory"}},
            ]))),
            None,
        )
        .unwrap();
        let get = |p: &str| files.iter().find(|f| f.0 == p).cloned().unwrap();
        assert_eq!(get("labels").1, b"a=\"x\\\"y\"\nb=\"2\"");
        assert_eq!(get("ns"), ("ns".into(), b"ns".to_vec(), 0o600));
        assert_eq!(get("k").1, b"v");
        assert_eq!(get("mem").1, b"67108864");
    }

    #[test]
    fn a_bad_field_or_path_is_named() {
        let e = downward_files(
            &pod(),
            "spec.volumes[2]",
            Some(&items(
                serde_json::json!([{"path": "x", "fieldRef": {"fieldPath": "spec.nodeName"}}]),
            )),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.volumes[2].downwardAPI.items[0].fieldRef.fieldPath"),
            "{e}"
        );
        let e = downward_files(
            &pod(),
            "spec.volumes[2]",
            Some(&items(
                serde_json::json!([{"path": "../x", "fieldRef": {"fieldPath": "metadata.name"}}]),
            )),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"../x\""), "{e}");
    }
}
