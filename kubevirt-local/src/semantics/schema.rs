//! Structural-schema handling for custom resources, as the API server does it: defaults are applied,
//! unknown fields are pruned or reported (per `fieldValidation`), and types, required fields, enums
//! and bounds are validated. Errors carry the field path.

use serde_json::{Map, Value};

/// One schema violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Field path (`spec.template.spec.domain`).
    pub field: String,
    /// Kubernetes cause reason (`FieldValueRequired`, ...).
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// The outcome of checking one object.
#[derive(Debug, Default)]
pub struct Checked {
    /// Violations (422 when non-empty).
    pub causes: Vec<Cause>,
    /// Fields not in the schema (pruned from the object).
    pub unknown: Vec<String>,
}

/// Apply defaults, prune unknown fields and validate `value` against the root `schema`.
/// The root's `apiVersion`, `kind` and `metadata` are the server's business and skipped.
pub fn check(schema: &Value, value: &mut Value) -> Checked {
    check_update(schema, value, None)
}

/// [`check`] for an update: transition rules (`oldSelf`) see the stored object's value at the same
/// path, where there is one (list items are not correlated).
pub fn check_update(schema: &Value, value: &mut Value, old: Option<&Value>) -> Checked {
    let mut out = Checked::default();
    if let (Some(props), Some(obj)) = (schema.get("properties"), value.as_object_mut()) {
        let required: Vec<&str> = str_list(schema.get("required"));
        let keys: Vec<String> = obj.keys().cloned().collect();
        for k in keys {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match props.get(&k) {
                Some(s) => {
                    if let Some(v) = obj.get_mut(&k) {
                        walk(s, v, old.and_then(|o| o.get(&k)), &k, &mut out);
                    }
                }
                None if schema.get("x-kubernetes-preserve-unknown-fields")
                    == Some(&Value::Bool(true)) => {}
                None => {
                    obj.remove(&k);
                    out.unknown.push(k);
                }
            }
        }
        apply_defaults(props, obj);
        for r in required {
            if !matches!(r, "apiVersion" | "kind" | "metadata")
                && obj.get(r).is_none_or(Value::is_null)
            {
                out.causes.push(Cause {
                    field: r.to_string(),
                    reason: "FieldValueRequired",
                    message: "Required value".into(),
                });
            }
        }
    }
    cel_rules(schema, value, old, "", &mut out);
    out
}

/// Evaluate the node's `x-kubernetes-validations` with `self` bound to `value`. Transition rules
/// (`oldSelf`) are skipped: they need the stored object at the same path.
///
/// An update that leaves the value at this path as it was is not held to the other rules again
/// (Kubernetes' validation ratcheting, on by default since 1.30: an object stored under older
/// rules stays writable; a status update does not re-check its spec); transition rules still run.
fn cel_rules(schema: &Value, value: &Value, old: Option<&Value>, path: &str, out: &mut Checked) {
    let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    else {
        return;
    };
    let unchanged = old == Some(value);
    for r in rules {
        let Some(rule) = r.get("rule").and_then(Value::as_str) else {
            continue;
        };
        let transition = rule.contains("oldSelf");
        if !transition && unchanged {
            continue;
        }
        if transition && old.is_none() {
            continue;
        }
        let field = match r.get("fieldPath").and_then(Value::as_str) {
            Some(fp) if path.is_empty() => fp.trim_start_matches('.').to_string(),
            Some(fp) => format!("{path}{fp}"),
            None => path.to_string(),
        };
        let reason = match r.get("reason").and_then(Value::as_str) {
            Some("FieldValueRequired") => "FieldValueRequired",
            Some("FieldValueForbidden") => "FieldValueForbidden",
            Some("FieldValueDuplicate") => "FieldValueDuplicate",
            _ => "FieldValueInvalid",
        };
        // Declared property names as CEL sees them (`self.__namespace__`).
        let escaped = super::cel_names::escape(value, schema);
        let escaped_old = old
            .filter(|_| transition)
            .map(|o| super::cel_names::escape(o, schema));
        let message = match evaluate(rule, &escaped, escaped_old.as_ref()) {
            Ok(true) => continue,
            Ok(false) => r
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("Invalid value: failed rule: {rule}")),
            Err(e) => format!("Invalid value: rule {rule:?} could not be evaluated: {e}"),
        };
        out.causes.push(Cause {
            field,
            reason,
            message,
        });
    }
}

/// The compiled rules this thread has evaluated: the same few rules of the installed CRDs run on
/// every write, and compiling one costs more than running it.
const COMPILED_KEPT: usize = 512;

thread_local! {
    static COMPILED: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<cel::Program>>> =
        std::cell::RefCell::default();
}

fn compiled(rule: &str) -> Result<std::rc::Rc<cel::Program>, String> {
    if let Some(p) = COMPILED.with_borrow(|c| c.get(rule).cloned()) {
        return Ok(p);
    }
    let program = std::rc::Rc::new(cel::Program::compile(rule).map_err(|e| format!("{e:?}"))?);
    COMPILED.with_borrow_mut(|c| {
        if c.len() >= COMPILED_KEPT {
            c.clear();
        }
        c.insert(rule.to_string(), program.clone());
    });
    Ok(program)
}

fn evaluate(rule: &str, value: &Value, old: Option<&Value>) -> Result<bool, String> {
    let program = compiled(rule)?;
    let mut ctx = cel::Context::default();
    let v = cel::to_value(value).map_err(|e| e.to_string())?;
    ctx.add_variable("self", v).map_err(|e| e.to_string())?;
    if let Some(old) = old {
        let o = cel::to_value(old).map_err(|e| e.to_string())?;
        ctx.add_variable("oldSelf", o).map_err(|e| e.to_string())?;
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("the rule returned {other:?}, not a boolean")),
        Err(e) => Err(e.to_string()),
    }
}

fn str_list(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn apply_defaults(props: &Value, obj: &mut Map<String, Value>) {
    if let Some(props) = props.as_object() {
        for (k, s) in props {
            if let Some(d) = s.get("default")
                && obj.get(k).is_none()
            {
                obj.insert(k.clone(), d.clone());
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, value: &mut Value, old: Option<&Value>, path: &str, out: &mut Checked) {
    let bool_of = |k: &str| schema.get(k) == Some(&Value::Bool(true));
    // A null is valid for a nullable field, and the API server drops the nulls of non-nullable
    // fields before validation: either way there is nothing to check.
    if value.is_null() {
        return;
    }
    let actual = type_name(value);
    if bool_of("x-kubernetes-int-or-string") {
        if actual != "integer" && actual != "string" {
            out.causes.push(invalid(path, actual, "integer or string"));
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let ok = want == actual || (want == "number" && actual == "integer");
        if !ok {
            out.causes.push(invalid(path, actual, want));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.causes.push(Cause {
            field: path.into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        });
    }
    bounds(schema, value, path, out);
    match value {
        Value::Object(obj) => {
            if bool_of("x-kubernetes-preserve-unknown-fields") && schema.get("properties").is_none()
            {
                return;
            }
            let props = schema.get("properties");
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = obj.keys().cloned().collect();
            for k in keys {
                let child = format!("{path}.{k}");
                if let Some(s) = props.and_then(|p| p.get(&k)) {
                    if let Some(v) = obj.get_mut(&k) {
                        walk(s, v, old.and_then(|o| o.get(&k)), &child, out);
                    }
                } else if let Some(s) = additional {
                    if let Some(v) = obj.get_mut(&k) {
                        walk(
                            s,
                            v,
                            old.and_then(|o| o.get(&k)),
                            &format!("{path}[{k}]"),
                            out,
                        );
                    }
                } else if !bool_of("x-kubernetes-preserve-unknown-fields") {
                    obj.remove(&k);
                    out.unknown.push(child);
                }
            }
            if let Some(p) = props {
                apply_defaults(p, obj);
            }
            for r in str_list(schema.get("required")) {
                if obj.get(r).is_none_or(Value::is_null) {
                    out.causes.push(Cause {
                        field: format!("{path}.{r}"),
                        reason: "FieldValueRequired",
                        message: "Required value".into(),
                    });
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(s, item, None, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
    // Rules see the node after pruning and defaulting.
    cel_rules(schema, value, old, path, out);
}

fn bounds(schema: &Value, value: &Value, path: &str, out: &mut Checked) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let mut fail = |m: String| {
        out.causes.push(Cause {
            field: path.into(),
            reason: "FieldValueInvalid",
            message: m,
        })
    };
    if let Some(x) = value.as_f64() {
        if let Some(min) = num("minimum")
            && x < min
        {
            fail(format!(
                "Invalid value: {value}: should be greater than or equal to {min}"
            ));
        }
        if let Some(max) = num("maximum")
            && x > max
        {
            fail(format!(
                "Invalid value: {value}: should be less than or equal to {max}"
            ));
        }
    }
    if let Some(s) = value.as_str()
        && num("maxLength").is_some_and(|m| s.chars().count() as f64 > m)
    {
        fail(format!(
            "Too long: may not be longer than {}",
            num("maxLength").unwrap_or_default()
        ));
    }
    if let Some(a) = value.as_array()
        && num("maxItems").is_some_and(|m| a.len() as f64 > m)
    {
        fail(format!(
            "Too many: {}: must have at most {} items",
            a.len(),
            num("maxItems").unwrap_or_default()
        ));
    }
}

fn invalid(path: &str, actual: &str, want: &str) -> Cause {
    Cause {
        field: path.into(),
        reason: "FieldValueTypeInvalid",
        message: format!(
            "Invalid value: \"{actual}\": {path} in body must be of type {want}: \"{actual}\""
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "integer", "minimum": 1},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "port": {"x-kubernetes-int-or-string": true}
        }}}})
    }

    #[test]
    fn validates_prunes_and_defaults() {
        let mut v = json!({"spec": {"size": 0, "bogus": 1, "labels": {"a": 1}, "free": {"x": 1}, "port": "http"}});
        let c = check(&schema(), &mut v);
        assert_eq!(c.unknown, ["spec.bogus"]);
        let fields: Vec<_> = c.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.labels[a]", "spec.size"]);
        assert_eq!(v["spec"]["mode"], "a");
        assert_eq!(v["spec"]["free"]["x"], 1);
        assert!(v["spec"].get("bogus").is_none());
    }

    #[test]
    fn cel_rules_are_enforced_with_their_field_path() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max", "fieldPath": ".min"},
                                         {"rule": "self.min == oldSelf.min"}],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}}}});
        let mut ok = json!({"spec": {"min": 1, "max": 2}});
        assert!(check(&schema, &mut ok).causes.is_empty());
        let mut bad = json!({"spec": {"min": 3, "max": 2}});
        let c = check(&schema, &mut bad);
        assert_eq!(c.causes.len(), 1);
        assert_eq!(
            (c.causes[0].field.as_str(), c.causes[0].message.as_str()),
            ("spec.min", "min must not exceed max")
        );
    }

    #[test]
    fn an_unchanged_value_is_not_held_to_its_rules_again() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object",
                "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"},
                                             {"rule": "self.max >= oldSelf.max", "message": "max may only grow"}],
                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}});
        // Stored before the rule (or by an older version of it): min > max.
        let stored = json!({"spec": {"min": 3, "max": 2}});
        let messages = |c: Checked| c.causes.into_iter().map(|c| c.message).collect::<Vec<_>>();
        // A status update leaves the spec as it was: accepted.
        let mut status = json!({"spec": {"min": 3, "max": 2}, "status": {"phase": "Running"}});
        assert!(messages(check_update(&schema, &mut status, Some(&stored))).is_empty());
        // A change to the spec is held to the rule again.
        let mut changed = json!({"spec": {"min": 4, "max": 2}});
        assert_eq!(
            messages(check_update(&schema, &mut changed, Some(&stored))),
            ["min must not exceed max"]
        );
        // Without a stored object (a create) the rule applies.
        let mut created = stored.clone();
        assert_eq!(
            messages(check(&schema, &mut created)),
            ["min must not exceed max"]
        );
        // Transition rules run on unchanged values too (and see the stored value).
        let grown = json!({"spec": {"min": 1, "max": 5}});
        let mut shrunk = json!({"spec": {"min": 1, "max": 4}});
        assert_eq!(
            messages(check_update(&schema, &mut shrunk, Some(&grown))),
            ["max may only grow"]
        );
    }

    #[test]
    fn a_compiled_rule_is_kept_and_a_broken_one_reported() {
        let first = compiled("self.a == 1").expect("compiles");
        let again = compiled("self.a == 1").expect("compiles");
        assert!(std::rc::Rc::ptr_eq(&first, &again));
        assert!(compiled("self.a ==").is_err());
    }

    #[test]
    fn required_and_enum() {
        let mut v = json!({"spec": {"mode": "c"}});
        let c = check(&schema(), &mut v);
        let reasons: Vec<_> = c
            .causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                ("spec.mode", "FieldValueNotSupported"),
                ("spec.size", "FieldValueRequired")
            ]
        );
    }
}
