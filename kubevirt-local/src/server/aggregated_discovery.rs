//! Aggregated discovery (`apidiscovery.k8s.io/v2`, kube-apiserver's default since 1.30): asked
//! with `Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`, `/api`
//! and `/apis` answer with every group, version and resource in one `APIGroupDiscoveryList`, so
//! kubectl 1.32 needs two requests instead of one more per group/version. The documents are the
//! legacy ones (`/api/v1`, `/apis/<g>/<v>`) converted: a subresource (`pods/log`) becomes an
//! entry of its resource's `subresources`, an `APIResource`'s own group/version/kind its
//! `responseKind`. Groups of APIServices with a Service get their aggregated server's document
//! (asked at once for all, as the availability check asks); one that cannot be had is
//! `freshness: Stale`, as kube-aggregator reports it and client-go reads it (a failed
//! group/version).

use super::State;
use serde_json::{Value, json};
use std::sync::Arc;

/// The Content-Type of an aggregated discovery answer.
pub const CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether `accept` prefers the aggregated form: its first media range this server serves
/// (JSON, aggregated or not) is the aggregated v2 one.
pub fn wanted(accept: &str) -> bool {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let params: Vec<&str> = parts.filter(|p| !p.starts_with("q=")).collect();
        match media {
            "application/json" if params.is_empty() => return false,
            "application/json" => {
                let has = |p: &str| params.contains(&p);
                if has("g=apidiscovery.k8s.io") && has("v=v2") && has("as=APIGroupDiscoveryList") {
                    return true;
                }
            }
            "*/*" | "application/*" => return false,
            _ => {}
        }
    }
    false
}

/// The `APIVersionDiscovery` of an `APIResourceList` (`group`/`version`'s legacy document).
pub fn version_entry(list: &Value, group: &str, version: &str) -> Value {
    let all = list["resources"].as_array().cloned().unwrap_or_default();
    let kind_of = |r: &Value| {
        let field = |k: &str, default: &str| {
            r[k].as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .to_string()
        };
        json!({"group": field("group", group), "version": field("version", version),
            "kind": r["kind"].as_str().unwrap_or_default()})
    };
    let mut resources: Vec<Value> = Vec::new();
    for r in all.iter().filter(|r| {
        r["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty() && !n.contains('/'))
    }) {
        let scope = if r["namespaced"] == true {
            "Namespaced"
        } else {
            "Cluster"
        };
        let mut e = json!({"resource": r["name"], "responseKind": kind_of(r), "scope": scope,
            "singularResource": r["singularName"].as_str().unwrap_or_default(),
            "verbs": r["verbs"].as_array().cloned().unwrap_or_default()});
        for key in ["shortNames", "categories"] {
            if r[key].as_array().is_some_and(|a| !a.is_empty()) {
                e[key] = r[key].clone();
            }
        }
        resources.push(e);
    }
    for r in &all {
        let Some((parent, sub)) = r["name"].as_str().and_then(|n| n.split_once('/')) else {
            continue;
        };
        // A subresource of a resource the list does not name has nowhere to go.
        let Some(owner) = resources.iter_mut().find(|e| e["resource"] == parent) else {
            continue;
        };
        let entry = json!({"subresource": sub, "responseKind": kind_of(r),
            "verbs": r["verbs"].as_array().cloned().unwrap_or_default()});
        match owner["subresources"].as_array_mut() {
            Some(subs) => subs.push(entry),
            None => owner["subresources"] = json!([entry]),
        }
    }
    json!({"version": version, "resources": resources, "freshness": "Current"})
}

fn list(items: Vec<Value>) -> Value {
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {}, "items": items})
}

fn group_item(name: &str, versions: Vec<Value>) -> Value {
    let mut metadata = json!({"creationTimestamp": null});
    if !name.is_empty() {
        metadata["name"] = json!(name);
    }
    json!({"metadata": metadata, "versions": versions})
}

/// `/api` in the aggregated form: the core group's `v1`.
pub fn core(state: &State) -> Value {
    let versions = super::discovery::resources(&state.registry(), "", "v1")
        .map(|l| vec![version_entry(&l, "", "v1")])
        .unwrap_or_default();
    list(vec![group_item("", versions)])
}

/// `/apis` in the aggregated form: every group of `/apis` (in its order, versions preferred
/// first) with the resources of each version.
pub async fn apis(state: &Arc<State>) -> Value {
    let groups = super::api_groups(state);
    let pairs: Vec<(String, String)> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| {
            let name = g["name"].as_str().unwrap_or_default().to_string();
            g["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["version"].as_str().map(str::to_string))
                .map(move |v| (name.clone(), v))
                .collect::<Vec<_>>()
        })
        .collect();
    let entries = futures::future::join_all(pairs.iter().map(|(g, v)| async move {
        if super::aggregator::backed(state, g, v).is_some() {
            return Some(match super::aggregator::resource_list(state, g, v).await {
                Ok(l) => version_entry(&l, g, v),
                Err(why) => {
                    tracing::debug!(group = %g, version = %v, %why, "aggregated discovery: stale");
                    json!({"version": v, "resources": [], "freshness": "Stale"})
                }
            });
        }
        super::local_resources(state, g, v).map(|l| version_entry(&l, g, v))
    }))
    .await;
    let mut items: Vec<Value> = Vec::new();
    for ((g, _), entry) in pairs.iter().zip(entries) {
        let Some(entry) = entry else { continue };
        match items
            .iter_mut()
            .find(|i| i["metadata"]["name"] == g.as_str())
        {
            Some(item) => {
                if let Some(vs) = item["versions"].as_array_mut() {
                    vs.push(entry);
                }
            }
            None => items.push(group_item(g, vec![entry])),
        }
    }
    list(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_accept_header_asks_for_v2() {
        assert!(wanted(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(wanted(
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        ));
        assert!(!wanted("application/json"));
        assert!(!wanted("application/json, */*"));
        assert!(!wanted(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wanted(""));
    }

    #[test]
    fn subresources_go_under_their_resource_with_their_own_kind() {
        let legacy = json!({"groupVersion": "kubevirt.io/v1", "resources": [
            {"name": "virtualmachines", "singularName": "virtualmachine", "namespaced": true,
             "kind": "VirtualMachine", "verbs": ["get", "list"], "shortNames": ["vm", "vms"],
             "categories": ["all"]},
            {"name": "virtualmachines/status", "singularName": "", "namespaced": true,
             "kind": "VirtualMachine", "verbs": ["get", "patch", "update"]},
            {"name": "virtualmachines/scale", "singularName": "", "namespaced": true,
             "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get"]},
            {"name": "orphans/status", "kind": "X", "verbs": []},
            {"name": "kubevirts", "singularName": "kubevirt", "namespaced": false,
             "kind": "KubeVirt", "verbs": ["get"]}]});
        let v = version_entry(&legacy, "kubevirt.io", "v1");
        assert_eq!(v["freshness"], "Current");
        let rs = v["resources"].as_array().unwrap();
        assert_eq!(rs.len(), 2);
        let vm = &rs[0];
        assert_eq!(vm["scope"], "Namespaced");
        assert_eq!(
            vm["responseKind"],
            json!({"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"})
        );
        assert_eq!(vm["shortNames"], json!(["vm", "vms"]));
        let subs = vm["subresources"].as_array().unwrap();
        assert_eq!(subs[0]["subresource"], "status");
        assert_eq!(
            subs[1]["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert_eq!(rs[1]["scope"], "Cluster");
        assert!(rs[1].get("shortNames").is_none());
    }
}
