//! Validation of the built-in workload kinds (Deployment, ReplicaSet, DaemonSet, Job), the
//! rules of upstream's `apps/validation` and `batch/validation` the controllers rely on: a
//! selector that selects the template's labels, non-negative counts, a pod template with
//! containers, a usable rolling-update strategy, a Job restart policy. Each cause names its field.

use serde_json::Value;

use super::schema::Cause;

fn cause(field: &str, reason: &'static str, message: impl Into<String>) -> Cause {
    Cause {
        field: field.into(),
        reason,
        message: message.into(),
    }
}

/// Does a label selector (matchLabels and matchExpressions) select `labels`?
fn selects(selector: &Value, labels: &Value) -> bool {
    let have = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| have(k) == v.as_str());
    let exprs = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => have(key).is_some_and(|h| values.contains(&h)),
                "NotIn" => have(key).is_none_or(|h| !values.contains(&h)),
                "Exists" => have(key).is_some(),
                "DoesNotExist" => have(key).is_none(),
                _ => false,
            }
        });
    by_label && exprs
}

fn non_negative(obj: &Value, path: &[&str], out: &mut Vec<Cause>) {
    let v = path.iter().fold(obj, |v, p| &v[*p]);
    if let Some(n) = v.as_i64()
        && n < 0
    {
        out.push(cause(
            &path.join("."),
            "FieldValueInvalid",
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
}

/// An int-or-percent's value against 100 (only to tell zero from non-zero), or a cause.
fn int_or_percent(v: &Value, field: &str, out: &mut Vec<Cause>) -> Option<i64> {
    match v {
        Value::Null => None,
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => Some(i),
            _ => {
                out.push(cause(
                    field,
                    "FieldValueInvalid",
                    format!("Invalid value: {n}: must be greater than or equal to 0"),
                ));
                None
            }
        },
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if (0..=100).contains(&p) => Some(p),
            _ => {
                out.push(cause(field, "FieldValueInvalid", format!("Invalid value: \"{s}\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '10%') between 0% and 100%")));
                None
            }
        },
        other => {
            out.push(cause(
                field,
                "FieldValueInvalid",
                format!("Invalid value: {other}: must be an integer or a percentage"),
            ));
            None
        }
    }
}

/// The causes that make `obj` (of built-in `kind`) invalid; empty when it is valid or not a
/// workload kind.
pub fn validate(group: &str, kind: &str, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let workload = matches!(
        (group, kind),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") | ("batch", "Job")
    );
    if !workload {
        return out;
    }
    let spec = &obj["spec"];
    let template = &spec["template"];
    if template["spec"]["containers"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        out.push(cause(
            "spec.template.spec.containers",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if kind == "Job" {
        for f in [
            "parallelism",
            "completions",
            "backoffLimit",
            "activeDeadlineSeconds",
        ] {
            non_negative(obj, &["spec", f], &mut out);
        }
        match template["spec"]["restartPolicy"].as_str() {
            Some("Never" | "OnFailure") => {}
            other => out.push(cause(
                "spec.template.spec.restartPolicy",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {}: supported values: \"OnFailure\", \"Never\"",
                    other.map_or("\"Always\"".to_string(), |o| format!("\"{o}\""))
                ),
            )),
        }
        return out;
    }
    let selector = &spec["selector"];
    let empty = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty);
    if empty {
        out.push(cause(
            "spec.selector",
            "FieldValueRequired",
            "Required value",
        ));
    } else if !selects(selector, &template["metadata"]["labels"]) {
        out.push(cause(
            "spec.template.metadata.labels",
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                template["metadata"]["labels"]
            ),
        ));
    }
    non_negative(obj, &["spec", "replicas"], &mut out);
    non_negative(obj, &["spec", "minReadySeconds"], &mut out);
    if kind == "Deployment" {
        let strategy = &spec["strategy"];
        let rolling = &strategy["rollingUpdate"];
        if strategy["type"] == "Recreate" && !rolling.is_null() {
            out.push(cause(
                "spec.strategy.rollingUpdate",
                "FieldValueForbidden",
                "Forbidden: may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        let surge = int_or_percent(
            &rolling["maxSurge"],
            "spec.strategy.rollingUpdate.maxSurge",
            &mut out,
        );
        let unavailable = int_or_percent(
            &rolling["maxUnavailable"],
            "spec.strategy.rollingUpdate.maxUnavailable",
            &mut out,
        );
        if surge == Some(0) && unavailable == Some(0) {
            out.push(cause(
                "spec.strategy.rollingUpdate.maxUnavailable",
                "FieldValueInvalid",
                "Invalid value: 0: may not be 0 when `maxSurge` is 0",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn deployment(spec: Value) -> Value {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}}});
        json_patch::merge(&mut d, &json!({"spec": spec}));
        d
    }

    fn fields(c: &[Cause]) -> Vec<&str> {
        c.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn a_valid_deployment_passes_and_bad_fields_are_named() {
        assert!(validate("apps", "Deployment", &deployment(json!({}))).is_empty());
        assert_eq!(
            fields(&validate(
                "apps",
                "Deployment",
                &deployment(json!({"selector": {"matchLabels": {"app": "db"}}}))
            )),
            ["spec.template.metadata.labels"]
        );
        assert_eq!(
            fields(&validate(
                "apps",
                "Deployment",
                &deployment(json!({"replicas": -1}))
            )),
            ["spec.replicas"]
        );
        assert_eq!(
            fields(&validate(
                "apps",
                "Deployment",
                &deployment(
                    json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}})
                )
            )),
            ["spec.strategy.rollingUpdate.maxUnavailable"]
        );
        assert_eq!(
            fields(&validate(
                "apps",
                "Deployment",
                &deployment(json!({"strategy": {"rollingUpdate": {"maxSurge": "ten"}}}))
            )),
            ["spec.strategy.rollingUpdate.maxSurge"]
        );
        assert_eq!(
            fields(&validate(
                "apps",
                "DaemonSet",
                &json!({"spec": {"template": {"spec": {"containers": [{}]}}}})
            )),
            ["spec.selector"]
        );
        assert!(validate("", "Pod", &json!({})).is_empty());
    }

    #[test]
    fn jobs_need_a_restart_policy_that_ends() {
        let job = |policy: Value| json!({"spec": {"template": {"spec": {"restartPolicy": policy, "containers": [{}]}}}});
        assert!(validate("batch", "Job", &job(json!("Never"))).is_empty());
        assert_eq!(
            fields(&validate("batch", "Job", &job(json!("Always")))),
            ["spec.template.spec.restartPolicy"]
        );
        assert_eq!(
            fields(&validate("batch", "Job", &job(Value::Null))),
            ["spec.template.spec.restartPolicy"]
        );
    }

    proptest! {
        #[test]
        fn any_surge_text_is_judged_without_panicking(s in "\\PC{0,8}") {
            let _ = validate("apps", "Deployment", &deployment(json!({"strategy": {"rollingUpdate": {"maxSurge": s}}})));
        }
    }
}
