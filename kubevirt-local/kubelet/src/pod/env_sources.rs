//! The ConfigMaps and Secrets a container's environment names (`env[].valueFrom.configMapKeyRef`,
//! `secretKeyRef`, `envFrom[].configMapRef`, `secretRef`), read from the API server when the
//! container is about to be created. What is missing is simply absent here; whether that is an
//! error (not `optional`) is decided where the environment is built
//! ([`container_config`](super::config::container_config)).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use kube::Api;

/// A source could not be read (not "not found": the API server failed); retried later.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} {namespace}/{name} for the container's environment: {source}")]
pub struct EnvSourceError {
    /// `configmap` or `secret`.
    pub what: &'static str,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Why.
    #[source]
    pub source: Box<kube::Error>,
}

/// The data of the sources a container names; a missing one is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSources {
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// The ConfigMaps and Secrets `c`'s environment names.
pub fn referenced(c: &Container) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut config_maps, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            config_maps.insert(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.insert(r.name.clone());
        }
    }
    for e in c.env_from.iter().flatten() {
        if let Some(r) = &e.config_map_ref {
            config_maps.insert(r.name.clone());
        }
        if let Some(r) = &e.secret_ref {
            secrets.insert(r.name.clone());
        }
    }
    (config_maps, secrets)
}

impl EnvSources {
    /// Reads what `c` names in `namespace`.
    pub async fn fetch(
        client: &kube::Client,
        namespace: &str,
        c: &Container,
    ) -> Result<Self, EnvSourceError> {
        let (config_maps, secrets) = referenced(c);
        let mut out = Self::default();
        let err = |what, name: &str| {
            let (namespace, name) = (namespace.to_string(), name.to_string());
            move |source| EnvSourceError {
                what,
                namespace,
                name,
                source: Box::new(source),
            }
        };
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        for name in config_maps {
            if let Some(cm) = cms.get_opt(&name).await.map_err(err("configmap", &name))? {
                out.config_maps
                    .insert(name, cm.data.unwrap_or_default().into_iter().collect());
            }
        }
        let secs: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for name in secrets {
            if let Some(s) = secs.get_opt(&name).await.map_err(err("secret", &name))? {
                let mut data: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                data.extend(s.string_data.unwrap_or_default());
                out.secrets.insert(name, data);
            }
        }
        Ok(out)
    }

    /// With ConfigMap `name` holding `data`.
    pub fn with_config_map<K: Into<String>, V: Into<String>>(
        mut self,
        name: &str,
        data: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let data = data.into_iter().map(|(k, v)| (k.into(), v.into()));
        self.config_maps.insert(name.to_string(), data.collect());
        self
    }

    /// With Secret `name` holding `data` (decoded).
    pub fn with_secret<K: Into<String>, V: Into<String>>(
        mut self,
        name: &str,
        data: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let data = data.into_iter().map(|(k, v)| (k.into(), v.into()));
        self.secrets.insert(name.to_string(), data.collect());
        self
    }

    /// ConfigMap `name`'s data, if it exists.
    pub fn config_map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.config_maps.get(name)
    }

    /// Secret `name`'s data, if it exists.
    pub fn secret(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.secrets.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_collected_from_env_and_env_from() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "k"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}},
                {"name": "C", "value": "x"}
            ],
            "envFrom": [{"configMapRef": {"name": "cm2"}}, {"secretRef": {"name": "s1"}}]
        }))
        .unwrap();
        let (cms, secrets) = referenced(&c);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["cm1", "cm2"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["s1"]);
    }
}
