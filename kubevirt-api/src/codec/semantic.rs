use crate::path::FieldPath;
use serde_json::Value;

/// Fields present (and not `null`) in `input` that are absent from `output`.
///
/// This is how unknown fields are found: `output` is `input` after a trip through the typed API.
pub fn lost_fields(input: &Value, output: &Value) -> Vec<FieldPath> {
    let mut out = Vec::new();
    walk_lost(input, output, &FieldPath::root(), &mut out);
    out
}

fn walk_lost(input: &Value, output: &Value, path: &FieldPath, out: &mut Vec<FieldPath>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a {
                if av.is_null() {
                    continue;
                }
                match b.get(k) {
                    Some(bv) => walk_lost(av, bv, &path.field(k), out),
                    None => out.push(path.field(k)),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                walk_lost(av, bv, &path.index(i), out);
            }
        }
        _ => {}
    }
}

/// Every path where `a` and `b` differ, treating `null` and an absent field as the same and numbers
/// by value (`1` equals `1.0`). Empty means the two documents are semantically equal.
pub fn differences(a: &Value, b: &Value) -> Vec<FieldPath> {
    let mut out = Vec::new();
    walk_diff(a, b, &FieldPath::root(), &mut out);
    out
}

fn walk_diff(a: &Value, b: &Value, path: &FieldPath, out: &mut Vec<FieldPath>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, xv) in x {
                walk_diff(xv, y.get(k).unwrap_or(&Value::Null), &path.field(k), out);
            }
            for (k, yv) in y {
                if !x.contains_key(k) && !yv.is_null() {
                    out.push(path.field(k));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(path.clone());
                return;
            }
            for (i, (xv, yv)) in x.iter().zip(y).enumerate() {
                walk_diff(xv, yv, &path.index(i), out);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            if x != y && x.as_f64() != y.as_f64() {
                out.push(path.clone());
            }
        }
        _ => {
            if a != b {
                out.push(path.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_equals_absent() {
        let a = json!({"metadata": {"creationTimestamp": null}, "spec": {"x": 1}});
        let b = json!({"metadata": {}, "spec": {"x": 1.0}});
        assert!(differences(&a, &b).is_empty());
        assert!(lost_fields(&a, &b).is_empty());
    }

    #[test]
    fn reports_lost_and_changed_paths() {
        let a = json!({"spec": {"disks": [{"name": "a", "bogus": true}], "n": 1}});
        let b = json!({"spec": {"disks": [{"name": "a"}], "n": 2}});
        let lost: Vec<_> = lost_fields(&a, &b).iter().map(|p| p.to_string()).collect();
        assert_eq!(lost, ["spec.disks[0].bogus"]);
        let diff: Vec<_> = differences(&a, &b).iter().map(|p| p.to_string()).collect();
        assert_eq!(diff, ["spec.disks[0].bogus", "spec.n"]);
    }

    #[test]
    fn invented_fields_are_differences() {
        let a = json!({"spec": {}});
        let b = json!({"spec": {"running": false}});
        assert_eq!(differences(&a, &b).len(), 1);
    }
}
