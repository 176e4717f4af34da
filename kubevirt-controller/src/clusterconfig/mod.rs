//! The cluster configuration the components read from the `KubeVirt` CR's `spec.configuration`
//! (upstream's ClusterConfig), live: [`watch`] follows the active CR (any namespace; the one
//! [`crate::operator::active`] picks) and hands out the current [`ClusterConfig`] through a
//! [`ConfigHandle`]. A CR whose spec fails the operator's checks
//! ([`crate::operator::config::validate`], field paths) is refused: the last good
//! configuration stays and the refusal is kept for whoever asks ([`ConfigState::rejected`]).
//! Without a CR (the embedded `kubevirt-local up`) upstream's defaults apply.
//!
//! What the components do with it: the VMI controller sizes the launcher pod's requests with
//! `cpuAllocationRatio` and `developerConfiguration.memoryOvercommit` and refuses `hostDisk`
//! volumes without the `HostDisk` gate. `migrations` and `evictionStrategy` are read and kept
//! for the features that will use them.

mod watch;

pub use self::watch::{ConfigHandle, watch};

use serde_json::Value;
use std::collections::BTreeSet;

/// Upstream's default `cpuAllocationRatio`: a vCPU requests a tenth of a core.
pub const DEFAULT_CPU_ALLOCATION_RATIO: u32 = 10;
/// Upstream's default `memoryOvercommit`, in percent: no overcommit.
pub const DEFAULT_MEMORY_OVERCOMMIT: u32 = 100;

/// The configuration in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `developerConfiguration.featureGates`; `None` without a CR (nothing is gated then:
    /// the embedded control plane runs every feature it has).
    pub feature_gates: Option<BTreeSet<String>>,
    /// `developerConfiguration.cpuAllocationRatio`: a vCPU requests 1/ratio of a core.
    pub cpu_allocation_ratio: u32,
    /// `developerConfiguration.memoryOvercommit`, percent: the pod requests guest memory ×
    /// 100 / this (plus the overhead) when the VMI names no memory request.
    pub memory_overcommit: u32,
    /// `migrations`, as written (for live migration).
    pub migrations: Option<Value>,
    /// `evictionStrategy` (`None`, `LiveMigrate`, `LiveMigrateIfPossible`, `External`).
    pub eviction_strategy: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            feature_gates: None,
            cpu_allocation_ratio: DEFAULT_CPU_ALLOCATION_RATIO,
            memory_overcommit: DEFAULT_MEMORY_OVERCOMMIT,
            migrations: None,
            eviction_strategy: None,
        }
    }
}

impl ClusterConfig {
    /// The configuration of a `KubeVirt` CR's `spec` (unset fields: upstream's defaults).
    /// The spec is taken as valid; [`ClusterConfig::checked`] checks it first.
    pub fn from_spec(spec: &Value) -> ClusterConfig {
        let c = &spec["configuration"];
        let dev = &c["developerConfiguration"];
        let positive = |v: &Value, default: u32| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        ClusterConfig {
            feature_gates: Some(
                dev["featureGates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect(),
            ),
            cpu_allocation_ratio: positive(
                &dev["cpuAllocationRatio"],
                DEFAULT_CPU_ALLOCATION_RATIO,
            ),
            memory_overcommit: positive(&dev["memoryOvercommit"], DEFAULT_MEMORY_OVERCOMMIT),
            migrations: c.get("migrations").filter(|m| !m.is_null()).cloned(),
            eviction_strategy: c["evictionStrategy"].as_str().map(str::to_string),
        }
    }

    /// [`ClusterConfig::from_spec`] after the operator's checks of the spec.
    ///
    /// # Errors
    /// Every problem, `PATH: message`, joined.
    pub fn checked(spec: &Value) -> Result<ClusterConfig, String> {
        let errors = crate::operator::config::validate(spec);
        if errors.is_empty() {
            Ok(ClusterConfig::from_spec(spec))
        } else {
            Err(crate::operator::config::describe(&errors))
        }
    }

    /// Whether feature gate `gate` is on: listed in the CR, or no CR at all.
    pub fn gate(&self, gate: &str) -> bool {
        self.feature_gates.as_ref().is_none_or(|g| g.contains(gate))
    }

    /// The CPU a VMI's pod requests for `vcpus` vCPUs, in millicores (rounded up).
    pub fn cpu_request_millis(&self, vcpus: u64) -> u64 {
        (vcpus * 1000).div_ceil(u64::from(self.cpu_allocation_ratio.max(1)))
    }

    /// The memory a VMI's pod requests for `guest` bytes of guest memory (before the
    /// overhead), overcommitted.
    pub fn memory_request(&self, guest: u64) -> u64 {
        let percent = u128::from(self.memory_overcommit.max(1));
        u64::try_from(u128::from(guest) * 100 / percent).unwrap_or(u64::MAX)
    }
}

/// What a [`ConfigHandle`] holds: the configuration in force and why the last CR was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigState {
    /// In force.
    pub config: ClusterConfig,
    /// `namespace/name` of the CR it came from; `None`: the defaults (no CR).
    pub source: Option<String>,
    /// The active CR's problems (`PATH: message`) when it was refused.
    pub rejected: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unset_fields_take_upstreams_defaults_and_no_cr_gates_nothing() {
        let none = ClusterConfig::default();
        assert!(none.gate("Snapshot"));
        assert_eq!(none.cpu_request_millis(1), 100);
        assert_eq!(none.memory_request(64 << 20), 64 << 20);
        let empty = ClusterConfig::from_spec(&json!({}));
        assert_eq!(
            (empty.cpu_allocation_ratio, empty.memory_overcommit),
            (10, 100)
        );
        assert!(!empty.gate("Snapshot"), "a CR gates what it does not list");
    }

    #[test]
    fn the_cr_configures_gates_ratios_migrations_and_eviction() {
        let c = ClusterConfig::checked(&json!({"configuration": {
            "developerConfiguration": {
                "featureGates": ["Snapshot", "HostDisk"],
                "cpuAllocationRatio": 4,
                "memoryOvercommit": 150,
            },
            "migrations": {"bandwidthPerMigration": "64Mi"},
            "evictionStrategy": "LiveMigrate",
        }}))
        .unwrap();
        assert!(c.gate("HostDisk") && !c.gate("VMExport"));
        assert_eq!(c.cpu_request_millis(2), 500);
        assert_eq!(c.cpu_request_millis(1), 250);
        assert_eq!(c.memory_request(150 << 20), 100 << 20);
        assert_eq!(c.eviction_strategy.as_deref(), Some("LiveMigrate"));
        assert_eq!(c.migrations, Some(json!({"bandwidthPerMigration": "64Mi"})));
    }

    #[test]
    fn a_bad_configuration_is_refused_with_its_field_path() {
        let e = ClusterConfig::checked(&json!({"configuration": {
            "developerConfiguration": {"cpuAllocationRatio": 0},
        }}))
        .unwrap_err();
        assert!(
            e.contains("spec.configuration.developerConfiguration.cpuAllocationRatio"),
            "{e}"
        );
    }
}
