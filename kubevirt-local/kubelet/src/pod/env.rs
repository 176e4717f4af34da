//! A container's environment: `envFrom` (ConfigMaps, Secrets, with a prefix), then `env` in
//! order (values with `$(VAR)` expanded from what is defined before them, `fieldRef`,
//! `configMapKeyRef`, `secretKeyRef`), a later definition replacing an earlier one, as
//! upstream's kubelet builds it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::config::{SpecError, missing, spec_err, uid};
use super::env_sources::EnvSources;

/// Values a container's environment may refer to (`fieldRef`, and the ConfigMaps and Secrets
/// of `configMapKeyRef`, `secretKeyRef` and `envFrom`).
#[derive(Debug, Clone, Default)]
pub struct Downward {
    /// `status.podIP`.
    pub pod_ip: String,
    /// `status.hostIP`.
    pub host_ip: String,
    /// The ConfigMaps and Secrets the container names.
    pub sources: EnvSources,
    /// Where pods reach the API server: the `KUBERNETES_SERVICE_*` variables every container
    /// gets, as in-cluster clients (kube-rs, client-go, kubectl) read them.
    pub api: Option<std::net::SocketAddr>,
}

/// The variables upstream's kubelet gives every container for the `kubernetes` Service.
fn service_env(api: &std::net::SocketAddr) -> Vec<(String, String)> {
    let (host, port) = (api.ip().to_string(), api.port());
    let url = format!("tcp://{}", api);
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), url),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host),
    ]
}

fn field_ref(pod: &Pod, path: &str, d: &Downward) -> Option<String> {
    let m = &pod.metadata;
    let label = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => uid(pod),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()?
            .service_account_name
            .clone()
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => d.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => d.host_ip.clone(),
        p if p.starts_with("metadata.labels['") => label("metadata.labels['", &m.labels)?,
        p if p.starts_with("metadata.annotations['") => {
            label("metadata.annotations['", &m.annotations)?
        }
        _ => return None,
    })
}

/// Expands `$(VAR)` in `s` from `env` (unknown references stay as written; `$$` is `$`).
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..3 + end]),
            }
            rest = &tail[3 + end..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Sets `name` (a later definition replaces an earlier one in place, as upstream's map does).
fn set(out: &mut Vec<(String, String)>, name: &str, value: String) {
    match out.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => out.push((name.to_string(), value)),
    }
}

/// Whether `name` may be an environment variable's name: printable ASCII without `=`.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
}

/// The value of key `key` of a ConfigMap or Secret, or why there is none (`None`: optional and
/// missing, the variable is left out).
fn key_ref(
    data: Option<&BTreeMap<String, String>>,
    (kind, what): (&str, &str),
    (ns, name, key): (&str, &str, &str),
    optional: bool,
    field: String,
) -> Result<Option<String>, SpecError> {
    let value = match data {
        None => Err(format!("{what} {name:?} not found")),
        Some(d) => d
            .get(key)
            .cloned()
            .ok_or_else(|| format!("couldn't find key {key} in {kind} {ns}/{name}")),
    };
    match value {
        Ok(v) => Ok(Some(v)),
        Err(_) if optional => Ok(None),
        Err(message) => Err(missing(field, message)),
    }
}

pub(super) fn env(
    pod: &Pod,
    c: &Container,
    at: &str,
    d: &Downward,
) -> Result<Vec<(String, String)>, SpecError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    // The service variables first: the container's own definitions replace them.
    let mut out: Vec<(String, String)> = d.api.as_ref().map(service_env).unwrap_or_default();
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        let field = format!("{at}.envFrom[{i}]");
        let (data, optional, what, name) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), None) => (
                d.sources.config_map(&r.name),
                r.optional == Some(true),
                "configmap",
                &r.name,
            ),
            (None, Some(r)) => (
                d.sources.secret(&r.name),
                r.optional == Some(true),
                "secret",
                &r.name,
            ),
            _ => {
                return Err(spec_err(
                    field,
                    "must name exactly one of configMapRef and secretRef",
                ));
            }
        };
        let Some(data) = data else {
            if optional {
                continue;
            }
            return Err(missing(field, format!("{what} {name:?} not found")));
        };
        let prefix = from.prefix.as_deref().unwrap_or_default();
        for (key, value) in data {
            let var = format!("{prefix}{key}");
            // Upstream skips (and reports) keys that are no variable names.
            if valid_env_name(&var) {
                set(&mut out, &var, value.clone());
            }
        }
    }
    for (i, e) in c.env.iter().flatten().enumerate() {
        let field = format!("{at}.env[{i}].valueFrom");
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field_ref(pod, &f.field_path, d).ok_or_else(|| {
                        spec_err(
                            format!("{field}.fieldRef.fieldPath"),
                            format!("{:?} is not a supported field", f.field_path),
                        )
                    })?
                } else if let Some(r) = &from.config_map_key_ref {
                    let data = d.sources.config_map(&r.name);
                    let found = key_ref(
                        data,
                        ("ConfigMap", "configmap"),
                        (ns, &r.name, &r.key),
                        r.optional == Some(true),
                        format!("{field}.configMapKeyRef"),
                    )?;
                    let Some(v) = found else { continue };
                    v
                } else if let Some(r) = &from.secret_key_ref {
                    let data = d.sources.secret(&r.name);
                    let found = key_ref(
                        data,
                        ("Secret", "secret"),
                        (ns, &r.name, &r.key),
                        r.optional == Some(true),
                        format!("{field}.secretKeyRef"),
                    )?;
                    let Some(v) = found else { continue };
                    v
                } else if let Some(r) = &from.resource_field_ref {
                    // The container itself when the reference does not name one.
                    let mut r = r.clone();
                    r.container_name.get_or_insert_with(|| c.name.clone());
                    super::resources::value(pod, &r)
                        .map_err(|why| spec_err(format!("{field}.resourceFieldRef"), why))?
                } else {
                    return Err(spec_err(
                        field,
                        "one of fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef is needed",
                    ));
                }
            }
            (Some(v), None) => expand(v, &out),
            (None, None) => String::new(),
        };
        set(&mut out, &e.name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::config::container_config;
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": containers}
        }))
        .unwrap()
    }

    fn env_of(p: &Pod, d: &Downward) -> Result<Vec<(String, String)>, SpecError> {
        let c = &p.spec.as_ref().unwrap().containers[0];
        container_config(p, c, "spec.containers[0]", 0, &BTreeMap::new(), d)
            .map(|cfg| cfg.envs.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    #[test]
    fn env_from_config_maps_and_secrets() {
        let p = pod(json!([{
            "name": "c", "image": "i",
            "envFrom": [
                {"configMapRef": {"name": "cm"}},
                {"secretRef": {"name": "s"}, "prefix": "S_"},
                {"configMapRef": {"name": "absent", "optional": true}}
            ],
            "env": [
                {"name": "ONE", "value": "override-$(TWO)"},
                {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "TWO"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pass"}}},
                {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope", "optional": true}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
            ]
        }]));
        let d = Downward {
            sources: EnvSources::default()
                .with_config_map("cm", [("ONE", "1"), ("TWO", "2"), ("bad=name", "x")])
                .with_secret("s", [("pass", "hunter2")]),
            ..Default::default()
        };
        let env = env_of(&p, &d).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("ONE"),
            Some("override-2"),
            "env overrides envFrom: {env:?}"
        );
        assert_eq!(env.iter().filter(|(n, _)| n == "ONE").count(), 1);
        assert_eq!(get("TWO"), Some("2"));
        assert_eq!(get("S_pass"), Some("hunter2"));
        assert_eq!(get("KEY"), Some("2"));
        assert_eq!(get("PASS"), Some("hunter2"));
        assert_eq!(get("GONE"), None, "an optional missing key sets nothing");
        assert_eq!(get("NS"), Some("ns"));
        assert_eq!(get("bad=name"), None);
    }

    #[test]
    fn missing_sources_wait_with_the_field_named() {
        let cases = [
            (
                json!({"envFrom": [{"configMapRef": {"name": "cm"}}]}),
                "spec.containers[0].envFrom[0]",
                "configmap \"cm\" not found",
            ),
            (
                json!({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}),
                "spec.containers[0].env[0].valueFrom.configMapKeyRef",
                "configmap \"cm\" not found",
            ),
            (
                json!({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
                "spec.containers[0].env[0].valueFrom.secretKeyRef",
                "couldn't find key k in Secret ns/s",
            ),
        ];
        let d = Downward {
            sources: EnvSources::default().with_secret("s", [("other", "x")]),
            ..Default::default()
        };
        for (extra, field, message) in cases {
            let mut c = json!({"name": "c", "image": "i"});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let e = env_of(&pod(json!([c])), &d).unwrap_err();
            assert_eq!((e.field.as_str(), e.message.as_str()), (field, message));
            assert!(e.missing, "{e}");
        }
    }
}
