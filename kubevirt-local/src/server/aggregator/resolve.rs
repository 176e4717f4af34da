//! Where an APIService's requests go: its `spec.service` → the Service's port → a ready
//! endpoint, as kube-aggregator's `ResolveEndpoint` does, with upstream's reasons and messages
//! when there is none. The Service's Endpoints object is read when there is one; kubevirt-local
//! runs no endpoints controller, so without it the ready pods the Service selects are its
//! endpoints (what that controller would have written).

use serde_json::Value;
use std::net::{IpAddr, SocketAddr};

/// An APIService's `spec.service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// The Service's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Service port (default 443).
    pub port: i64,
}

impl ServiceRef {
    /// The name the serving certificate must carry: `<svc>.<ns>.svc`.
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

/// Why there is no endpoint: an upstream condition reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// `ServiceNotFound`, `ServicePortError`, `EndpointsNotFound`, `MissingEndpoints`, ...
    pub reason: &'static str,
    /// The condition's message.
    pub message: String,
}

/// `spec.service` of an APIService; `None` for a `Local` one (served by this server).
pub fn service_ref(apiservice: &Value) -> Option<ServiceRef> {
    let s = apiservice["spec"].get("service").filter(|s| !s.is_null())?;
    Some(ServiceRef {
        namespace: s["namespace"].as_str()?.to_string(),
        name: s["name"].as_str()?.to_string(),
        port: s["port"].as_i64().unwrap_or(443),
    })
}

/// The ready endpoint of `svc`: `service` and `endpoints` are the stored Service and Endpoints
/// (if any), `pods` the pods of its namespace.
pub fn endpoint(
    svc: &ServiceRef,
    service: Option<&Value>,
    endpoints: Option<&Value>,
    pods: &[Value],
) -> Result<SocketAddr, Unavailable> {
    let Some(service) = service else {
        return Err(Unavailable {
            reason: "ServiceNotFound",
            message: format!("service/{} in {:?} is not present", svc.name, svc.namespace),
        });
    };
    let port = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_i64() == Some(svc.port))
        .ok_or_else(|| Unavailable {
            reason: "ServicePortError",
            message: format!(
                "service/{} in {:?} is not listening on port {}",
                svc.name, svc.namespace, svc.port
            ),
        })?;
    let port_name = port["name"].as_str().unwrap_or_default();
    let missing = || Unavailable {
        reason: "MissingEndpoints",
        message: format!(
            "endpoints for service/{} in {:?} have no addresses with port name {:?}",
            svc.name, svc.namespace, port_name
        ),
    };
    if let Some(endpoints) = endpoints {
        return from_endpoints(endpoints, port_name).ok_or_else(missing);
    }
    let Some(selector) = service["spec"]["selector"]
        .as_object()
        .filter(|s| !s.is_empty())
    else {
        return Err(Unavailable {
            reason: "EndpointsNotFound",
            message: format!(
                "cannot find endpoints for service/{} in {:?}",
                svc.name, svc.namespace
            ),
        });
    };
    let mut ready: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            selector
                .iter()
                .all(|(k, v)| p["metadata"]["labels"][k.as_str()] == *v)
                && is_ready(p)
        })
        .collect();
    ready.sort_by_key(|p| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    ready
        .into_iter()
        .find_map(|p| {
            let ip: IpAddr = p["status"]["podIP"].as_str()?.parse().ok()?;
            let target = target_port(port, p)?;
            Some(SocketAddr::new(ip, target))
        })
        .ok_or_else(missing)
}

/// The first ready address of `endpoints` with a port named `port_name`.
fn from_endpoints(endpoints: &Value, port_name: &str) -> Option<SocketAddr> {
    endpoints["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|subset| {
            let port = subset["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"].as_str().unwrap_or_default() == port_name)?["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())?;
            let ip: IpAddr = subset["addresses"].as_array()?.first()?["ip"]
                .as_str()?
                .parse()
                .ok()?;
            Some(SocketAddr::new(ip, port))
        })
}

/// Running, Ready and not being deleted.
fn is_ready(pod: &Value) -> bool {
    pod["metadata"].get("deletionTimestamp").is_none()
        && pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The Service port's `targetPort` on `pod`: a number, or the name of a container port (none:
/// the port itself).
fn target_port(port: &Value, pod: &Value) -> Option<u16> {
    let n = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
    match &port["targetPort"] {
        Value::Null => n(&port["port"]),
        Value::String(name) => match name.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => pod["spec"]["containers"]
                .as_array()?
                .iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| n(&p["containerPort"])),
        },
        v => n(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc_ref() -> ServiceRef {
        service_ref(&json!({"spec": {"service": {"namespace": "kubevirt", "name": "virt-api"}}}))
            .unwrap()
    }

    fn service() -> Value {
        json!({"spec": {"selector": {"app": "virt-api"},
            "ports": [{"name": "https", "port": 443, "targetPort": "api"}]}})
    }

    fn pod(name: &str, ip: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": "virt-api"}},
            "spec": {"containers": [{"ports": [{"name": "api", "containerPort": 8443}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    }

    #[test]
    fn a_local_apiservice_has_no_service() {
        assert_eq!(service_ref(&json!({"spec": {"group": "x"}})), None);
        assert_eq!(service_ref(&json!({"spec": {"service": null}})), None);
        assert_eq!(svc_ref().port, 443);
        assert_eq!(svc_ref().server_name(), "virt-api.kubevirt.svc");
    }

    #[test]
    fn the_ready_selected_pod_on_its_named_target_port() {
        let pods = [pod("a", "10.0.0.5", false), pod("b", "10.0.0.6", true)];
        let at = endpoint(&svc_ref(), Some(&service()), None, &pods).unwrap();
        assert_eq!(at, "10.0.0.6:8443".parse().unwrap());
    }

    #[test]
    fn endpoints_win_when_present() {
        let eps = json!({"subsets": [{"addresses": [{"ip": "127.0.0.1"}],
            "ports": [{"name": "https", "port": 9443}]}]});
        let at = endpoint(&svc_ref(), Some(&service()), Some(&eps), &[]).unwrap();
        assert_eq!(at, "127.0.0.1:9443".parse().unwrap());
        let other = json!({"subsets": [{"addresses": [{"ip": "127.0.0.1"}],
            "ports": [{"name": "metrics", "port": 9443}]}]});
        let e = endpoint(&svc_ref(), Some(&service()), Some(&other), &[]).unwrap_err();
        assert_eq!(e.reason, "MissingEndpoints");
        assert_eq!(
            e.message,
            "endpoints for service/virt-api in \"kubevirt\" have no addresses with port name \"https\""
        );
    }

    #[test]
    fn upstream_reasons_when_there_is_none() {
        let e = endpoint(&svc_ref(), None, None, &[]).unwrap_err();
        assert_eq!(e.reason, "ServiceNotFound");
        assert_eq!(e.message, "service/virt-api in \"kubevirt\" is not present");
        let mut wrong_port = service();
        wrong_port["spec"]["ports"][0]["port"] = json!(8443);
        let e = endpoint(&svc_ref(), Some(&wrong_port), None, &[]).unwrap_err();
        assert_eq!(e.reason, "ServicePortError");
        let e = endpoint(
            &svc_ref(),
            Some(&service()),
            None,
            &[pod("a", "10.0.0.5", false)],
        )
        .unwrap_err();
        assert_eq!(e.reason, "MissingEndpoints");
        let no_selector = json!({"spec": {"ports": [{"port": 443}]}});
        let e = endpoint(&svc_ref(), Some(&no_selector), None, &[]).unwrap_err();
        assert_eq!(e.reason, "EndpointsNotFound");
    }

    #[test]
    fn numeric_and_absent_target_ports() {
        let mut s = service();
        s["spec"]["ports"][0]["targetPort"] = json!(7443);
        let at = endpoint(&svc_ref(), Some(&s), None, &[pod("b", "10.0.0.6", true)]).unwrap();
        assert_eq!(at.port(), 7443);
        s["spec"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("targetPort");
        let at = endpoint(&svc_ref(), Some(&s), None, &[pod("b", "10.0.0.6", true)]).unwrap();
        assert_eq!(at.port(), 443);
    }
}
