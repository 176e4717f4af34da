//! What a request asks to do, in RBAC's terms: kube-apiserver's `RequestInfo` (verb, API group,
//! resource, subresource, namespace, name, or the path of a non-resource request), the same for
//! the subresource API the server fronts (`subresources.kubevirt.io`).

use super::route::{self, Route};
use crate::semantics::rbac::Attributes;
use std::collections::BTreeMap;

/// The attributes of `method path?query` (user and groups left empty).
pub fn of_request(method: &str, path: &str, query: &BTreeMap<String, String>) -> Attributes {
    let Some(Route::Object(t)) =
        route::parse(path).or_else(|| route::parse(&subresource_only(path)))
    else {
        return Attributes {
            verb: non_resource_verb(method).into(),
            path: path.to_string(),
            ..Default::default()
        };
    };
    let sub = t.sub.clone().unwrap_or_default();
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match method {
        // Streams into a pod or VMI are `create` on their subresource whatever the method
        // (kubectl's websocket exec is a GET; upstream checks `create` for it).
        _ if t.group.is_empty()
            && t.plural == "pods"
            && matches!(sub.as_str(), "exec" | "attach" | "portforward") =>
        {
            "create"
        }
        "GET" | "HEAD" if watch => "watch",
        "GET" | "HEAD" if t.name.is_none() => "list",
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if t.name.is_none() => "deletecollection",
        "DELETE" => "delete",
        other => return unknown_verb(other, path),
    };
    // A namespace's own requests are in that namespace (RequestInfo does the same).
    let namespace = match (&t.namespace, t.group.is_empty() && t.plural == "namespaces") {
        (_, true) => t.name.clone().unwrap_or_default(),
        (ns, false) => ns.clone().unwrap_or_default(),
    };
    // A watch or list narrowed to one name (`kubectl get -w NAME`) is about that name.
    let name = t.name.clone().unwrap_or_else(|| {
        query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|n| !n.contains(','))
            .unwrap_or_default()
            .to_string()
    });
    Attributes {
        verb: verb.into(),
        api_group: t.group,
        resource: t.plural,
        subresource: sub,
        namespace,
        name,
        ..Default::default()
    }
}

/// A namespaced object's path cut after its first subresource segment: RequestInfo's
/// subresource is that segment alone (`.../vmi/NAME/vnc/screenshot` is subresource `vnc`).
fn subresource_only(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let keep = match segs.first() {
        Some(&"api") => 7,
        Some(&"apis") => 8,
        _ => return path.to_string(),
    };
    if segs.len() > keep && segs.get(keep - 5) == Some(&"namespaces") {
        format!("/{}", segs[..keep].join("/"))
    } else {
        path.to_string()
    }
}

fn non_resource_verb(method: &str) -> &'static str {
    match method {
        "POST" => "post",
        "PUT" => "put",
        "PATCH" => "patch",
        "DELETE" => "delete",
        "HEAD" => "head",
        "OPTIONS" => "options",
        _ => "get",
    }
}

fn unknown_verb(method: &str, path: &str) -> Attributes {
    Attributes {
        verb: method.to_lowercase(),
        path: path.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_path_maps_without_panicking(path in "(/[a-z0-9.*%:-]{0,12}){0,12}", method in "GET|PUT|POST|PATCH|DELETE|HEAD|OPTIONS|BREW") {
            let a = of_request(&method, &path, &BTreeMap::new());
            // Either a resource request or a path, never both or neither.
            prop_assert!(a.resource.is_empty() != a.path.is_empty() || path.is_empty() || path == "/");
        }

        #[test]
        fn namespaced_object_paths_map_to_their_parts(
            group in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}", ns in "[a-z][a-z0-9-]{0,10}", plural in "[a-z]{2,12}",
            name in "[a-z][a-z0-9.-]{0,10}", sub in "[a-z]{1,10}", extra in "(/[a-z]{1,5}){0,3}",
        ) {
            prop_assume!(plural != "namespaces");
            let path = format!("/apis/{group}/v1/namespaces/{ns}/{plural}/{name}/{sub}{extra}");
            let a = of_request("PUT", &path, &BTreeMap::new());
            prop_assert_eq!((a.verb.as_str(), a.api_group.as_str(), a.namespace.as_str()), ("update", group.as_str(), ns.as_str()));
            prop_assert_eq!((a.resource.as_str(), a.name.as_str(), a.subresource.as_str()), (plural.as_str(), name.as_str(), sub.as_str()));
        }
    }

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn of(
        method: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> (String, String, String, String, String, String) {
        let a = of_request(method, path, &q(query));
        (
            a.verb,
            a.api_group,
            a.resource,
            a.subresource,
            a.namespace,
            a.name,
        )
    }

    fn t(
        v: &str,
        g: &str,
        r: &str,
        s: &str,
        ns: &str,
        n: &str,
    ) -> (String, String, String, String, String, String) {
        (v.into(), g.into(), r.into(), s.into(), ns.into(), n.into())
    }

    #[test]
    fn requests_map_to_upstream_request_info() {
        let vms = "/apis/kubevirt.io/v1/namespaces/a/virtualmachines";
        assert_eq!(
            of("GET", vms, &[]),
            t("list", "kubevirt.io", "virtualmachines", "", "a", "")
        );
        assert_eq!(
            of("GET", vms, &[("watch", "true")]),
            t("watch", "kubevirt.io", "virtualmachines", "", "a", "")
        );
        assert_eq!(
            of(
                "GET",
                vms,
                &[("watch", "1"), ("fieldSelector", "metadata.name=vm1")]
            ),
            t("watch", "kubevirt.io", "virtualmachines", "", "a", "vm1")
        );
        assert_eq!(
            of("DELETE", vms, &[]),
            t(
                "deletecollection",
                "kubevirt.io",
                "virtualmachines",
                "",
                "a",
                ""
            )
        );
        assert_eq!(
            of("PATCH", &format!("{vms}/vm1"), &[]),
            t("patch", "kubevirt.io", "virtualmachines", "", "a", "vm1")
        );
        assert_eq!(
            of("PUT", &format!("{vms}/vm1/status"), &[]),
            t(
                "update",
                "kubevirt.io",
                "virtualmachines",
                "status",
                "a",
                "vm1"
            )
        );
        assert_eq!(
            of(
                "PUT",
                "/apis/subresources.kubevirt.io/v1/namespaces/a/virtualmachines/vm1/start",
                &[]
            ),
            t(
                "update",
                "subresources.kubevirt.io",
                "virtualmachines",
                "start",
                "a",
                "vm1"
            )
        );
        assert_eq!(
            of(
                "GET",
                "/apis/subresources.kubevirt.io/v1/namespaces/a/virtualmachineinstances/vm1/console",
                &[]
            ),
            t(
                "get",
                "subresources.kubevirt.io",
                "virtualmachineinstances",
                "console",
                "a",
                "vm1"
            )
        );
        assert_eq!(
            of("GET", "/api/v1/namespaces/a/pods/p/log", &[]),
            t("get", "", "pods", "log", "a", "p")
        );
        assert_eq!(
            of(
                "GET",
                "/apis/subresources.kubevirt.io/v1/namespaces/a/virtualmachineinstances/v/vnc/screenshot",
                &[]
            ),
            t(
                "get",
                "subresources.kubevirt.io",
                "virtualmachineinstances",
                "vnc",
                "a",
                "v"
            )
        );
        assert_eq!(
            of("GET", "/api/v1/namespaces/a/pods/p/proxy/x/y", &[]),
            t("get", "", "pods", "proxy", "a", "p")
        );
        assert_eq!(
            of("GET", "/api/v1/namespaces/a/pods/p/exec", &[]),
            t("create", "", "pods", "exec", "a", "p")
        );
        assert_eq!(
            of("GET", "/api/v1/namespaces/a", &[]),
            t("get", "", "namespaces", "", "a", "a")
        );
        assert_eq!(
            of("GET", "/api/v1/nodes", &[]),
            t("list", "", "nodes", "", "", "")
        );
        let d = of_request("GET", "/apis/kubevirt.io/v1", &q(&[]));
        assert_eq!(
            (d.verb.as_str(), d.path.as_str(), d.resource.as_str()),
            ("get", "/apis/kubevirt.io/v1", "")
        );
        assert_eq!(of_request("GET", "/healthz", &q(&[])).path, "/healthz");
    }
}
