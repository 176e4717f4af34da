//! Following the `KubeVirt` CRs: every watch event recomputes the [`ConfigState`] from the
//! active CR; receivers see the new state at once.

use super::{ClusterConfig, ConfigState};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use kubevirt_api::core::v1::KubeVirt;
use std::sync::Arc;
use tokio::sync::watch as channel;

/// A view of the configuration in force (cheap to clone). The watch task ends when the last
/// handle of a [`watch`] is dropped.
#[derive(Debug, Clone)]
pub struct ConfigHandle {
    rx: channel::Receiver<Arc<ConfigState>>,
    _task: Option<Arc<AbortOnDrop>>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ConfigHandle {
    /// A handle that always says `config` (no cluster to watch: unit tests, embedders).
    pub fn fixed(config: ClusterConfig) -> ConfigHandle {
        let (_tx, rx) = channel::channel(Arc::new(ConfigState {
            config,
            ..ConfigState::default()
        }));
        ConfigHandle { rx, _task: None }
    }

    /// The state now.
    pub fn state(&self) -> Arc<ConfigState> {
        self.rx.borrow().clone()
    }

    /// The configuration in force now.
    pub fn current(&self) -> ClusterConfig {
        self.rx.borrow().config.clone()
    }
}

/// The state for the CRs seen: the active one's configuration when it passes the checks;
/// otherwise the previous configuration, with the refusal.
pub fn state_for(crs: &[KubeVirt], previous: &ConfigState) -> ConfigState {
    let Some(name) = crate::operator::active(crs) else {
        return ConfigState::default();
    };
    let Some(kv) = crs.iter().find(|k| k.name_any() == name) else {
        return ConfigState::default();
    };
    let source = Some(format!("{}/{name}", kv.namespace().unwrap_or_default()));
    let spec = serde_json::to_value(&kv.spec).unwrap_or_default();
    match ClusterConfig::checked(&serde_json::json!({ "configuration": spec["configuration"] })) {
        Ok(config) => ConfigState {
            config,
            source,
            rejected: None,
        },
        Err(problems) => ConfigState {
            config: previous.config.clone(),
            source: previous.source.clone(),
            rejected: Some(problems),
        },
    }
}

/// Watches the `KubeVirt` CRs of every namespace with `client` and keeps the returned
/// handle's state current. Until the first list arrives (or with no CR) the defaults apply.
pub fn watch(client: Client) -> ConfigHandle {
    let (tx, rx) = channel::channel(Arc::new(ConfigState::default()));
    let task = tokio::spawn(async move {
        let api: Api<KubeVirt> = Api::all(client);
        let (reader, writer) = reflector::store();
        let events = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Err(error) => {
                    tracing::warn!(error = %error, "watching KubeVirt CRs for the configuration");
                    continue;
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => {}
            }
            let crs: Vec<KubeVirt> = reader.state().iter().map(|k| (**k).clone()).collect();
            let next = state_for(&crs, &tx.borrow());
            if **tx.borrow() != next {
                match (&next.rejected, &next.source) {
                    (Some(problems), _) => {
                        tracing::warn!(problems = %problems, "the KubeVirt CR's configuration is refused; the last good one stays")
                    }
                    (None, Some(source)) => {
                        tracing::info!(source = %source, cpu_allocation_ratio = next.config.cpu_allocation_ratio, memory_overcommit = next.config.memory_overcommit, "cluster configuration from the KubeVirt CR")
                    }
                    (None, None) => {
                        tracing::info!("no KubeVirt CR: the default cluster configuration")
                    }
                }
                tx.send_replace(Arc::new(next));
            }
        }
    });
    ConfigHandle {
        rx,
        _task: Some(Arc::new(AbortOnDrop(task.abort_handle()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(name: &str, configuration: serde_json::Value) -> KubeVirt {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "metadata": {"name": name, "namespace": "kubevirt"},
            "spec": {"configuration": configuration},
        }))
        .unwrap()
    }

    #[test]
    fn the_active_crs_configuration_applies_and_a_bad_one_keeps_the_last_good() {
        let none = state_for(&[], &ConfigState::default());
        assert_eq!(none, ConfigState::default());
        let good = state_for(
            &[kv(
                "kubevirt",
                json!({"developerConfiguration": {"cpuAllocationRatio": 4}}),
            )],
            &none,
        );
        assert_eq!(good.config.cpu_allocation_ratio, 4);
        assert_eq!(good.source.as_deref(), Some("kubevirt/kubevirt"));
        let bad = state_for(
            &[kv(
                "kubevirt",
                json!({"developerConfiguration": {"cpuAllocationRatio": -1}}),
            )],
            &good,
        );
        assert_eq!(bad.config.cpu_allocation_ratio, 4);
        let why = bad.rejected.unwrap();
        assert!(
            why.contains("spec.configuration.developerConfiguration.cpuAllocationRatio"),
            "{why}"
        );
    }
}
