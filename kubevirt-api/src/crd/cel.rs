//! CEL rules (`x-kubernetes-validations`) that carry upstream's webhook checks into the CRD schema, so a
//! plain cluster enforces them without a webhook server.
//!
//! Only rules whose cost is constant are used: the API server rejects a CRD whose estimated rule cost
//! is unbounded, which rules iterating over user-sized maps and lists easily are. Checks of that kind
//! (a VMIRS selector matching its template labels, unique disk names) live in
//! [`crate::validation`] and run in the admission path instead.

use serde_json::{Value, json};

/// One CEL rule attached at a schema location.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The kind whose CRD carries the rule.
    pub kind: &'static str,
    /// Where it is attached: property names from the root, `[]` for list items.
    pub at: &'static [&'static str],
    /// The CEL expression; `self` is the value at `at`.
    pub rule: &'static str,
    /// Message shown when the rule fails.
    pub message: &'static str,
    /// Field the failure is reported on, relative to `at` (empty: the node itself).
    pub field_path: &'static str,
    /// Kubernetes cause reason: `FieldValueInvalid`, `FieldValueForbidden`, `FieldValueRequired`.
    pub reason: &'static str,
}

const DV_ONE_SOURCE: &str = "!(has(self.source) && has(self.sourceRef))";
const DV_ANY_SOURCE: &str = "has(self.source) || has(self.sourceRef) || (has(self.pvc) && has(self.pvc.dataSourceRef)) \
     || (has(self.storage) && has(self.storage.dataSourceRef))";
const DV_ONE_STORAGE: &str = "has(self.pvc) != has(self.storage)";

/// Every rule, by kind.
pub const RULES: &[Rule] = &[
    Rule {
        kind: "VirtualMachine",
        at: &["spec"],
        rule: "!(has(self.running) && has(self.runStrategy))",
        message: crate::validation::RUNNING_AND_RUN_STRATEGY,
        field_path: ".running",
        reason: "FieldValueForbidden",
    },
    Rule {
        kind: "VirtualMachine",
        at: &["spec"],
        rule: "!has(self.runStrategy) || self.runStrategy in ['Always', 'Halted', 'Manual', 'RerunOnFailure', 'Once', 'WaitAsReceiver']",
        message: "runStrategy must be one of Always, Halted, Manual, RerunOnFailure, Once, WaitAsReceiver",
        field_path: ".runStrategy",
        reason: "FieldValueNotSupported",
    },
    Rule {
        kind: "VirtualMachine",
        at: &["spec", "dataVolumeTemplates", "[]", "spec"],
        rule: DV_ONE_SOURCE,
        message: "source and sourceRef are mutually exclusive",
        field_path: ".sourceRef",
        reason: "FieldValueForbidden",
    },
    Rule {
        kind: "VirtualMachineInstance",
        at: &["spec"],
        rule: "(has(self.domain.memory) && has(self.domain.memory.guest)) || (has(self.domain.resources) \
               && ((has(self.domain.resources.requests) && 'memory' in self.domain.resources.requests) \
               || (has(self.domain.resources.limits) && 'memory' in self.domain.resources.limits)))",
        message: "memory must be requested: set domain.memory.guest or domain.resources.requests.memory",
        field_path: ".domain",
        reason: "FieldValueRequired",
    },
    Rule {
        kind: "VirtualMachineInstanceReplicaSet",
        at: &["spec"],
        rule: "has(self.template.metadata) && has(self.template.metadata.labels)",
        message: "template.metadata.labels is required, and spec.selector must match it",
        field_path: ".template",
        reason: "FieldValueRequired",
    },
    Rule {
        kind: "DataVolume",
        at: &["spec"],
        rule: DV_ONE_SOURCE,
        message: "source and sourceRef are mutually exclusive",
        field_path: ".sourceRef",
        reason: "FieldValueForbidden",
    },
    Rule {
        kind: "DataVolume",
        at: &["spec"],
        rule: DV_ANY_SOURCE,
        message: "a DataVolume needs a source: set source or sourceRef (or a dataSourceRef populator)",
        field_path: ".source",
        reason: "FieldValueRequired",
    },
    Rule {
        kind: "DataVolume",
        at: &["spec"],
        rule: DV_ONE_STORAGE,
        message: "exactly one of pvc and storage must be set",
        field_path: ".storage",
        reason: "FieldValueInvalid",
    },
    Rule {
        kind: "VirtualMachineSnapshot",
        at: &["spec"],
        rule: "self.source.kind == 'VirtualMachine' && (!has(self.source.apiGroup) || self.source.apiGroup == 'kubevirt.io')",
        message: "only kubevirt.io VirtualMachine sources can be snapshotted",
        field_path: ".source",
        reason: "FieldValueNotSupported",
    },
    Rule {
        kind: "VirtualMachineRestore",
        at: &["spec"],
        rule: "self.target.kind == 'VirtualMachine' && (!has(self.target.apiGroup) || self.target.apiGroup == 'kubevirt.io')",
        message: "only kubevirt.io VirtualMachine targets can be restored",
        field_path: ".target",
        reason: "FieldValueNotSupported",
    },
];

/// The rules of `kind`.
pub fn rules_of(kind: &str) -> impl Iterator<Item = &'static Rule> + '_ {
    RULES.iter().filter(move |r| r.kind == kind)
}

/// Attach the rules of `kind` to its root schema (as JSON).
pub(super) fn attach(root: &mut Value, kind: &str) {
    for rule in rules_of(kind) {
        let Some(node) = locate(root, rule.at) else {
            continue;
        };
        let Some(map) = node.as_object_mut() else {
            continue;
        };
        let list = map
            .entry("x-kubernetes-validations")
            .or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            let mut entry =
                json!({"rule": rule.rule, "message": rule.message, "reason": rule.reason});
            if !rule.field_path.is_empty() {
                entry["fieldPath"] = json!(rule.field_path);
            }
            list.push(entry);
        }
    }
}

/// The schema node at `path` (property names, `[]` for items).
pub fn locate<'a>(root: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut node = root;
    for seg in path {
        node = if *seg == "[]" {
            node.get_mut("items")?
        } else {
            node.get_mut("properties")?.get_mut(*seg)?
        };
    }
    Some(node)
}
