//! Checking a `KubeVirt` CR's spec before anything is installed from it: the image settings,
//! the uninstall strategy, the workload update strategy and `spec.configuration`. A problem is
//! named by its field path (`spec.configuration.developerConfiguration.featureGates[1]: ...`);
//! the operator reports it as Degraded and changes nothing.
//!
//! The components read `spec.configuration` from the CR itself (as upstream's do; their roles
//! may read `kubevirts`), so the operator passes it on by keeping it valid.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::manifests::{PULL_POLICIES, registry_ok, tag_ok};

/// One problem: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path (`spec.imageTag`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The uninstall strategies (upstream's; empty means BlockUninstallIfWorkloadsExist).
pub const UNINSTALL_STRATEGIES: &[&str] =
    &["", "RemoveWorkloads", "BlockUninstallIfWorkloadsExist"];

const EVICTION_STRATEGIES: &[&str] = &["None", "LiveMigrate", "LiveMigrateIfPossible", "External"];
const ROLLOUT_STRATEGIES: &[&str] = &["Stage", "LiveUpdate"];
const UPDATE_METHODS: &[&str] = &["LiveMigrate", "Evict"];

struct Check {
    errors: Vec<FieldError>,
}

impl Check {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn one_of(&mut self, spec: &Value, path: &str, allowed: &[&str]) {
        if let Some(v) = lookup(spec, path).and_then(Value::as_str)
            && !allowed.contains(&v)
        {
            self.fail(
                path,
                format!("unsupported value {v:?}: one of {}", allowed.join(", ")),
            );
        }
    }

    fn positive(&mut self, spec: &Value, path: &str) {
        if let Some(n) = lookup(spec, path).and_then(Value::as_i64)
            && n <= 0
        {
            self.fail(path, format!("must be greater than 0, not {n}"));
        }
    }

    fn gates(&mut self, spec: &Value, path: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let Some(list) = lookup(spec, path).and_then(Value::as_array) else {
            return seen;
        };
        for (n, gate) in list.iter().enumerate() {
            let item = format!("{path}[{n}]");
            match gate.as_str() {
                Some("") => self.fail(&item, "an empty feature gate name"),
                Some(g) if !seen.insert(g.to_string()) => {
                    self.fail(&item, format!("feature gate {g:?} is listed twice"))
                }
                Some(_) => {}
                None => self.fail(&item, "a feature gate is a string"),
            }
        }
        seen
    }
}

/// `spec.a.b` of a spec (`path` starts with `spec.`).
fn lookup<'a>(spec: &'a Value, path: &str) -> Option<&'a Value> {
    path.strip_prefix("spec.")?
        .split('.')
        .try_fold(spec, |v, key| v.get(key))
}

/// Every problem of a `KubeVirt` spec (as JSON), in field order; empty when it is usable.
pub fn validate(spec: &Value) -> Vec<FieldError> {
    let mut c = Check { errors: Vec::new() };
    if let Some(r) = lookup(spec, "spec.imageRegistry").and_then(Value::as_str)
        && !r.is_empty()
        && !registry_ok(r)
    {
        c.fail(
            "spec.imageRegistry",
            format!("{r:?} is not a registry (host[:port][/path])"),
        );
    }
    if let Some(t) = lookup(spec, "spec.imageTag").and_then(Value::as_str)
        && !t.is_empty()
        && !tag_ok(t)
    {
        c.fail(
            "spec.imageTag",
            format!("{t:?} is not an image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"),
        );
    }
    let mut policies = vec![""];
    policies.extend(PULL_POLICIES);
    c.one_of(spec, "spec.imagePullPolicy", &policies);
    c.one_of(spec, "spec.uninstallStrategy", UNINSTALL_STRATEGIES);
    if let Some(methods) =
        lookup(spec, "spec.workloadUpdateStrategy.workloadUpdateMethods").and_then(Value::as_array)
    {
        for (n, m) in methods.iter().enumerate() {
            let m = m.as_str().unwrap_or_default();
            if !UPDATE_METHODS.contains(&m) {
                c.fail(
                    &format!("spec.workloadUpdateStrategy.workloadUpdateMethods[{n}]"),
                    format!(
                        "unsupported value {m:?}: one of {}",
                        UPDATE_METHODS.join(", ")
                    ),
                );
            }
        }
    }
    c.positive(spec, "spec.workloadUpdateStrategy.batchEvictionSize");
    let dev = "spec.configuration.developerConfiguration";
    let enabled = c.gates(spec, &format!("{dev}.featureGates"));
    let disabled = c.gates(spec, &format!("{dev}.disabledFeatureGates"));
    for both in enabled.intersection(&disabled) {
        c.fail(
            &format!("{dev}.disabledFeatureGates"),
            format!("feature gate {both:?} is both enabled and disabled"),
        );
    }
    c.positive(spec, &format!("{dev}.memoryOvercommit"));
    c.positive(spec, &format!("{dev}.cpuAllocationRatio"));
    let tolerate = format!("{dev}.pvcTolerateLessSpaceUpToPercent");
    if let Some(p) = lookup(spec, &tolerate).and_then(Value::as_i64)
        && !(0..=100).contains(&p)
    {
        c.fail(&tolerate, format!("a percentage (0 to 100), not {p}"));
    }
    c.one_of(
        spec,
        "spec.configuration.evictionStrategy",
        EVICTION_STRATEGIES,
    );
    c.one_of(
        spec,
        "spec.configuration.vmRolloutStrategy",
        ROLLOUT_STRATEGIES,
    );
    for path in [
        "spec.configuration.machineType",
        "spec.configuration.cpuModel",
    ] {
        if lookup(spec, path).and_then(Value::as_str) == Some("") {
            c.fail(path, "empty (leave it out for the default)");
        }
    }
    if let Some(n) =
        lookup(spec, "spec.configuration.virtualMachineInstancesPerNode").and_then(Value::as_i64)
        && n < 0
    {
        c.fail(
            "spec.configuration.virtualMachineInstancesPerNode",
            format!("must not be negative, not {n}"),
        );
    }
    c.errors
}

/// The problems as one message (`path: what; path: what`).
pub fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shipped_cr_is_valid() {
        let cr = crate::manifests::cr_document(&crate::manifests::ManifestOptions {
            registry: "r".into(),
            tag: "v1".into(),
            pull_policy: "IfNotPresent".into(),
        });
        assert_eq!(validate(&cr["spec"]), []);
    }

    #[test]
    fn each_problem_is_named_by_its_field_path() {
        let spec = json!({
            "imageTag": "v1:2",
            "imagePullPolicy": "Sometimes",
            "uninstallStrategy": "Never",
            "workloadUpdateStrategy": {"workloadUpdateMethods": ["LiveMigrate", "Teleport"]},
            "configuration": {
                "developerConfiguration": {
                    "featureGates": ["Snapshot", "Snapshot", ""],
                    "disabledFeatureGates": ["Snapshot"],
                    "memoryOvercommit": 0,
                },
                "evictionStrategy": "Sometimes",
            },
        });
        let paths: Vec<String> = validate(&spec).into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "spec.imageTag",
                "spec.imagePullPolicy",
                "spec.uninstallStrategy",
                "spec.workloadUpdateStrategy.workloadUpdateMethods[1]",
                "spec.configuration.developerConfiguration.featureGates[1]",
                "spec.configuration.developerConfiguration.featureGates[2]",
                "spec.configuration.developerConfiguration.disabledFeatureGates",
                "spec.configuration.developerConfiguration.memoryOvercommit",
                "spec.configuration.evictionStrategy",
            ]
        );
        let message = describe(&validate(&spec));
        assert!(
            message.contains(
                "spec.configuration.developerConfiguration.featureGates[1]: feature gate \"Snapshot\" is listed twice"
            ),
            "{message}"
        );
    }
}
