//! The CEL rules in the CRDs compile, hold for every upstream example, and reject what they are
//! meant to reject, evaluated by an independent CEL implementation.

mod common;

use kubevirt_api::crd::cel::{RULES, Rule};
use serde_json::{Value, json};

/// The values a rule attached at `rule.at` sees in `doc` (one per list element for `[]`).
fn targets<'a>(doc: &'a Value, at: &[&str]) -> Vec<&'a Value> {
    let mut nodes = vec![doc];
    for seg in at {
        nodes = nodes
            .into_iter()
            .flat_map(|n| -> Vec<&Value> {
                if *seg == "[]" {
                    n.as_array().map(|a| a.iter().collect()).unwrap_or_default()
                } else {
                    n.get(*seg).into_iter().collect()
                }
            })
            .collect();
    }
    nodes
}

fn eval(rule: &Rule, value: &Value) -> bool {
    let program = cel::Program::compile(rule.rule)
        .unwrap_or_else(|e| panic!("{}: does not compile: {e:?}", rule.rule));
    let mut ctx = cel::Context::default();
    ctx.add_variable("self", cel::to_value(value).expect("to CEL value"))
        .expect("bind self");
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => b,
        other => panic!("{} on {value}: {other:?}", rule.rule),
    }
}

#[test]
fn rules_hold_for_every_upstream_example() {
    let mut evaluated = 0;
    for (file, docs) in common::fixture_documents() {
        // The apitesting fixtures fill every field for serialisation tests (running and runStrategy
        // together, say); upstream's webhook rejects them too.
        if file.starts_with("kubevirt-apitesting") {
            continue;
        }
        for doc in docs {
            let kind = doc.value["kind"].as_str().unwrap_or_default();
            for rule in RULES.iter().filter(|r| r.kind == kind) {
                for target in targets(&doc.value, rule.at) {
                    assert!(
                        eval(rule, target),
                        "{file}[{}]: rule {:?} fails",
                        doc.index,
                        rule.rule
                    );
                    evaluated += 1;
                }
            }
        }
    }
    assert!(evaluated > 50, "only {evaluated} evaluations");
}

#[test]
fn rules_reject_what_upstream_webhooks_reject() {
    let rule = |kind: &str, needle: &str| -> &'static Rule {
        RULES
            .iter()
            .find(|r| r.kind == kind && r.rule.contains(needle))
            .expect("rule exists")
    };
    let vm_spec = json!({"running": true, "runStrategy": "Always", "template": {}});
    assert!(!eval(rule("VirtualMachine", "has(self.running)"), &vm_spec));
    assert!(!eval(
        rule("VirtualMachine", "WaitAsReceiver"),
        &json!({"runStrategy": "Sometimes"})
    ));
    assert!(eval(
        rule("VirtualMachine", "WaitAsReceiver"),
        &json!({"runStrategy": "Manual"})
    ));
    let no_memory = json!({"domain": {"devices": {}}});
    assert!(!eval(rule("VirtualMachineInstance", "memory"), &no_memory));
    let requested =
        json!({"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}});
    assert!(eval(rule("VirtualMachineInstance", "memory"), &requested));
    let dv = json!({"source": {"blank": {}}, "sourceRef": {"kind": "DataSource", "name": "x"}, "storage": {}});
    assert!(!eval(
        rule("DataVolume", "!(has(self.source) && has(self.sourceRef))"),
        &dv
    ));
    assert!(!eval(
        rule("DataVolume", "has(self.pvc) != has(self.storage)"),
        &json!({"source": {"blank": {}}})
    ));
    let pod = json!({"source": {"kind": "Pod", "name": "p"}});
    assert!(!eval(rule("VirtualMachineSnapshot", "source.kind"), &pod));
}

#[test]
fn rules_are_in_the_generated_crds() {
    let crds = kubevirt_api::object::all_crds(&Default::default());
    for rule in RULES {
        let crd = crds
            .iter()
            .find(|c| c.spec.names.kind == rule.kind)
            .expect("crd");
        let mut schema = common::storage_schema(crd);
        let node = kubevirt_api::crd::cel::locate(&mut schema, rule.at)
            .expect("rule location exists in the schema");
        let rules = node["x-kubernetes-validations"]
            .as_array()
            .expect("validations");
        assert!(
            rules.iter().any(|r| r["rule"] == rule.rule),
            "{} missing at {:?}",
            rule.rule,
            rule.at
        );
    }
}
