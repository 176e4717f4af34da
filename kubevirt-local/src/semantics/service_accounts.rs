//! The ServiceAccount admission plugin's mutation of new pods, as upstream's API server does it:
//! a pod without `serviceAccountName` runs as `default`, and unless it (or, upstream, its service
//! account) sets `automountServiceAccountToken: false`, it gets the `kube-api-access-xxxxx`
//! projected volume (a bound token, the cluster CA, its namespace) mounted read-only at
//! [`MOUNT_PATH`] in every container that does not mount something there itself.

use serde_json::{Value, json};

use super::lifecycle::generate_name;

/// Where in-cluster clients look for the token, `ca.crt` and `namespace`.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The projected token's life (upstream's 3607 s: an hour and the kubelet's renewal margin).
pub const TOKEN_SECONDS: i64 = 3607;

fn containers(spec: &mut Value) -> impl Iterator<Item = &mut Value> {
    let Some(map) = spec.as_object_mut() else {
        return Vec::new().into_iter();
    };
    let mut all = Vec::new();
    for (key, list) in map.iter_mut() {
        if (key == "initContainers" || key == "containers")
            && let Some(list) = list.as_array_mut()
        {
            all.extend(list.iter_mut());
        }
    }
    all.into_iter()
}

fn mounts_there(c: &Value) -> bool {
    c["volumeMounts"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT_PATH))
}

/// Applies the plugin to new pod `pod`.
pub fn admit_pod(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let account = spec["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or(spec["serviceAccount"].as_str().filter(|s| !s.is_empty()))
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(account);
    spec["serviceAccount"] = json!(account);
    if spec["automountServiceAccountToken"] == false {
        return;
    }
    let needing: usize = containers(spec).filter(|c| !mounts_there(c)).count();
    if needing == 0 {
        return;
    }
    let volume = generate_name("kube-api-access-");
    let source = json!({"name": volume, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}});
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(volumes) => volumes.push(source),
        None => spec["volumes"] = json!([source]),
    }
    let mount = json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH});
    for c in containers(spec).filter(|c| !mounts_there(c)) {
        match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
            Some(mounts) => mounts.push(mount.clone()),
            None => c["volumeMounts"] = json!([mount]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_gets_the_token_volume_once() {
        let mut pod = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [
            {"name": "a"},
            {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]},
        ]}});
        admit_pod(&mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1);
        let name = volumes[0]["name"].as_str().unwrap();
        assert!(
            name.starts_with("kube-api-access-") && name.len() == 21,
            "{name}"
        );
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["name"], name);
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn opting_out_or_naming_an_account_is_kept() {
        let mut pod = json!({"spec": {"serviceAccountName": "ops",
            "automountServiceAccountToken": false, "containers": [{"name": "a"}]}});
        admit_pod(&mut pod);
        assert_eq!(pod["spec"]["serviceAccountName"], "ops");
        assert_eq!(pod["spec"]["serviceAccount"], "ops");
        assert!(pod["spec"]["volumes"].is_null());
        assert!(pod["spec"]["containers"][0]["volumeMounts"].is_null());
    }
}
