//! Server-side apply with field ownership: each field manager owns the fields it last applied
//! (recorded in `metadata.managedFields`, `FieldsV1`), so a field a manager stops applying is
//! removed unless another manager also owns it, and applying a field another manager owns with a
//! different value is a conflict unless forced.
//!
//! Lists and scalars are owned whole (as atomic lists are); maps are owned key by key.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

type Path = Vec<String>;

/// A conflict: `field` is owned by `manager` with another value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The field, in Kubernetes notation (`.spec.runStrategy`).
    pub field: String,
}

/// Apply `applied` as `manager` onto `current` (the stored object, or `None` to create).
/// Returns the new object with updated `managedFields`, or the conflicts.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut out = current.cloned().unwrap_or_else(|| json!({}));
    let mut entries: Vec<Value> = out["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| e["manager"] == manager && e["operation"] == "Apply";
    let previous: BTreeSet<Path> = entries
        .iter()
        .filter(|e| is_mine(e))
        .flat_map(|e| from_fields_v1(&e["fieldsV1"]))
        .collect();
    let wanted = owned_paths(applied);
    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| !is_mine(e)) {
        let theirs = from_fields_v1(&e["fieldsV1"]);
        let contested: Vec<&Path> = theirs
            .iter()
            .filter(|p| wanted.contains(*p) && get(&out, p) != get(applied, p))
            .collect();
        if contested.is_empty() {
            continue;
        }
        if force {
            let kept: BTreeSet<Path> = theirs
                .iter()
                .filter(|p| !wanted.contains(*p))
                .cloned()
                .collect();
            e["fieldsV1"] = to_fields_v1(&kept);
        } else {
            let who = e["manager"].as_str().unwrap_or("unknown").to_string();
            conflicts.extend(contested.into_iter().map(|p| Conflict {
                manager: who.clone(),
                field: format!(".{}", p.join(".")),
            }));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| from_fields_v1(&e["fieldsV1"]))
        .collect();
    for dropped in previous
        .difference(&wanted)
        .filter(|p| !others.contains(*p))
    {
        remove(&mut out, dropped);
    }
    merge(&mut out, applied);
    entries.retain(|e| !is_mine(e) && e["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()));
    entries.push(json!({
        "manager": manager, "operation": "Apply",
        "apiVersion": applied.get("apiVersion").cloned().unwrap_or(Value::Null),
        "time": now, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&wanted),
    }));
    out["metadata"]["managedFields"] = Value::Array(entries);
    Ok(out)
}

/// The fields an applied configuration sets: leaves, lists whole, metadata's labels and
/// annotations by key (identity and server-owned metadata are nobody's).
fn owned_paths(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    if let Some(obj) = v.as_object() {
        for (k, child) in obj {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for sub in ["labels", "annotations"] {
                        for key in child
                            .get(sub)
                            .and_then(Value::as_object)
                            .into_iter()
                            .flatten()
                            .map(|(k, _)| k)
                        {
                            out.insert(vec!["metadata".into(), sub.into(), key.clone()]);
                        }
                    }
                }
                _ => walk(child, vec![k.clone()], &mut out),
            }
        }
    }
    out
}

fn walk(v: &Value, path: Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(k.clone());
                walk(child, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

fn get<'a>(v: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter().try_fold(v, |node, seg| node.get(seg))
}

fn remove(v: &mut Value, path: &Path) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = v;
    for seg in parents {
        match node.get_mut(seg) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(m) = node.as_object_mut() {
        m.remove(last);
    }
}

/// An applied configuration is merged like a merge patch, except that explicit nulls set nothing.
fn merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// Paths as `FieldsV1` (`{"f:spec": {"f:runStrategy": {}}}`).
pub fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for seg in p {
            let entry = node.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

/// `FieldsV1` back to paths (leaves only; `.` and `k:`/`v:` list keys are read as whole fields).
pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    fn go(v: &Value, path: Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<(&String, &Value)> =
            m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path);
            }
            return;
        }
        for (k, child) in children {
            let mut p = path.clone();
            p.push(k[2..].to_string());
            go(child, p, out);
        }
    }
    go(v, Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: &Value, manager: &str) -> BTreeSet<Path> {
        v["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["manager"] == manager)
            .flat_map(|e| from_fields_v1(&e["fieldsV1"]))
            .collect()
    }

    #[test]
    fn a_field_no_longer_applied_is_removed() {
        let first = apply(
            None,
            &json!({"spec": {"a": 1, "b": 2}, "metadata": {"labels": {"x": "1"}}}),
            "ci",
            false,
            "t",
        )
        .unwrap();
        assert_eq!(fields(&first, "ci").len(), 3);
        let second = apply(Some(&first), &json!({"spec": {"a": 1}}), "ci", false, "t").unwrap();
        assert_eq!(second["spec"], json!({"a": 1}));
        assert!(
            second["metadata"]
                .get("labels")
                .and_then(|l| l.get("x"))
                .is_none()
        );
    }

    #[test]
    fn other_managers_conflict_unless_forced_and_keep_their_fields() {
        let a = apply(
            None,
            &json!({"spec": {"a": 1, "shared": "x"}}),
            "alice",
            false,
            "t",
        )
        .unwrap();
        let conflict = apply(
            Some(&a),
            &json!({"spec": {"shared": "y"}}),
            "bob",
            false,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            conflict,
            [Conflict {
                manager: "alice".into(),
                field: ".spec.shared".into()
            }]
        );
        let b = apply(
            Some(&a),
            &json!({"spec": {"shared": "y", "b": 2}}),
            "bob",
            true,
            "t",
        )
        .unwrap();
        assert_eq!(b["spec"], json!({"a": 1, "shared": "y", "b": 2}));
        assert!(!fields(&b, "alice").contains(&vec!["spec".to_string(), "shared".to_string()]));
        // Same value is not a conflict, and a field both own survives one of them dropping it.
        let both = apply(Some(&b), &json!({"spec": {"a": 1}}), "bob", false, "t").unwrap();
        let dropped = apply(Some(&both), &json!({"spec": {}}), "bob", false, "t").unwrap();
        assert_eq!(dropped["spec"]["a"], 1, "alice still owns spec.a");
    }

    #[test]
    fn fields_v1_round_trips() {
        let p: BTreeSet<Path> = [
            vec!["spec".to_string(), "a".to_string()],
            vec!["metadata".into(), "labels".into(), "k".into()],
        ]
        .into();
        assert_eq!(from_fields_v1(&to_fields_v1(&p)), p);
    }
}
