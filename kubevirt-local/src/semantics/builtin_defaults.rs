//! The defaults the API server applies to built-in kinds on create (`SetDefaults_*` in
//! Kubernetes), for the fields clients commonly leave out.

use serde_json::{Value, json};

fn default(obj: &mut Value, pointer: &str, value: Value) {
    let mut parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let Some(last) = parts.pop() else { return };
    let mut node = obj;
    for p in parts {
        if !node[p].is_object() {
            return;
        }
        node = &mut node[p];
    }
    // Go's zero value ("" for strings) counts as unset, as in Kubernetes' SetDefaults_*.
    if node.get(last).is_none_or(|v| v.is_null() || v == "") {
        node[last] = value;
    }
}

/// Apply the create-time defaults of built-in `kind` (group-less core kinds).
pub fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "Secret" => default(obj, "/type", json!("Opaque")),
        "Service" => {
            default(obj, "/spec/type", json!("ClusterIP"));
            default(obj, "/spec/sessionAffinity", json!("None"));
        }
        "Pod" => {
            default(obj, "/spec/restartPolicy", json!("Always"));
            default(obj, "/spec/dnsPolicy", json!("ClusterFirst"));
            default(obj, "/spec/schedulerName", json!("default-scheduler"));
            default(obj, "/spec/terminationGracePeriodSeconds", json!(30));
            if let Some(containers) = obj
                .pointer_mut("/spec/containers")
                .and_then(Value::as_array_mut)
            {
                for c in containers {
                    default(c, "/terminationMessagePath", json!("/dev/termination-log"));
                    default(c, "/terminationMessagePolicy", json!("File"));
                    let latest = c["image"]
                        .as_str()
                        .is_none_or(|i| !i.contains(':') || i.ends_with(":latest"));
                    default(
                        c,
                        "/imagePullPolicy",
                        json!(if latest { "Always" } else { "IfNotPresent" }),
                    );
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_only_what_is_missing() {
        let mut s = json!({"metadata": {}, "data": {}});
        apply("Secret", &mut s);
        assert_eq!(s["type"], "Opaque");
        let mut tls = json!({"type": "kubernetes.io/tls"});
        apply("Secret", &mut tls);
        assert_eq!(tls["type"], "kubernetes.io/tls");
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}});
        apply("Pod", &mut pod);
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
    }
}
