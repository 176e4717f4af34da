//! What the runtime holds for a pod, found by the CRI labels (so a restarted kubelet finds the
//! same sandboxes and containers: adoption needs no state of its own).

use std::collections::HashMap;

use k8s_cri::v1 as cri;

use crate::cri::{Cri, CriError, client_call, labels};

/// Every sandbox this kubelet made, optionally only `uid`'s, newest first.
pub async fn sandboxes(c: &Cri, uid: Option<&str>) -> Result<Vec<cri::PodSandbox>, CriError> {
    let mut selector = HashMap::from([(labels::MANAGED_BY.to_string(), "true".to_string())]);
    if let Some(uid) = uid {
        selector.insert(labels::POD_UID.into(), uid.into());
    }
    let mut items = c
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: selector,
                ..Default::default()
            }),
        })
        .await
        .map_err(client_call("ListPodSandbox"))?
        .into_inner()
        .items;
    items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(items)
}

/// The containers of sandbox `sandbox`.
pub async fn containers(c: &Cri, sandbox: &str) -> Result<Vec<cri::Container>, CriError> {
    Ok(c.runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sandbox.to_string(),
                ..Default::default()
            }),
        })
        .await
        .map_err(client_call("ListContainers"))?
        .into_inner()
        .containers)
}

/// Every container this kubelet made (all pods').
pub async fn all_containers(c: &Cri) -> Result<Vec<cri::Container>, CriError> {
    let selector = HashMap::from([(labels::MANAGED_BY.to_string(), "true".to_string())]);
    Ok(c.runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }),
        })
        .await
        .map_err(client_call("ListContainers"))?
        .into_inner()
        .containers)
}

/// One container's full status.
pub async fn container_status(c: &Cri, id: &str) -> Result<cri::ContainerStatus, CriError> {
    c.runtime
        .clone()
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(client_call("ContainerStatus"))?
        .into_inner()
        .status
        .ok_or(CriError::Call {
            call: "ContainerStatus",
            code: tonic::Code::NotFound,
            message: format!("no status for container {id}"),
        })
}

/// The sandbox's IP, empty if it has none (host network).
pub async fn sandbox_ip(c: &Cri, id: &str) -> Result<(bool, String), CriError> {
    let s = c
        .runtime
        .clone()
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(client_call("PodSandboxStatus"))?
        .into_inner()
        .status;
    Ok(match s {
        Some(s) => (
            s.state == cri::PodSandboxState::SandboxReady as i32,
            s.network.map(|n| n.ip).unwrap_or_default(),
        ),
        None => (false, String::new()),
    })
}

/// Stops a container, giving it `grace` seconds after SIGTERM before SIGKILL.
pub async fn stop_container(c: &Cri, id: &str, grace: i64) -> Result<(), CriError> {
    match c
        .runtime
        .clone()
        .stop_container(cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace.max(0),
        })
        .await
        .map_err(client_call("StopContainer"))
    {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Removes a container (stopped or not).
pub async fn remove_container(c: &Cri, id: &str) -> Result<(), CriError> {
    match c
        .runtime
        .clone()
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .map_err(client_call("RemoveContainer"))
    {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Stops every container of `sandbox` (SIGTERM, `grace` s, SIGKILL; all at once), then the
/// sandbox, then removes them all: the netns and veth go with the sandbox.
pub async fn remove_sandbox(c: &Cri, sandbox: &str, grace: i64) -> Result<(), CriError> {
    let list = containers(c, sandbox).await?;
    let stops = list.iter().map(|ct| stop_container(c, &ct.id, grace));
    for r in futures::future::join_all(stops).await {
        r?;
    }
    for ct in &list {
        remove_container(c, &ct.id).await?;
    }
    let mut rt = c.runtime.clone();
    let ignore_missing = |r: Result<(), CriError>| match r {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    };
    ignore_missing(
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox.to_string(),
        })
        .await
        .map(|_| ())
        .map_err(client_call("StopPodSandbox")),
    )?;
    ignore_missing(
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox.to_string(),
        })
        .await
        .map(|_| ())
        .map_err(client_call("RemovePodSandbox")),
    )
}

/// The grace period recorded on a sandbox when it was made (for pods the API no longer has).
pub fn recorded_grace(s: &cri::PodSandbox) -> i64 {
    s.annotations
        .get(labels::GRACE_PERIOD)
        .and_then(|g| g.parse().ok())
        .unwrap_or(30)
}
