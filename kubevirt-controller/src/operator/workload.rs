//! A component's workload as the status sees it: whether its Deployment or DaemonSet reports
//! every replica of the current template updated and available, and why its pods cannot start
//! if the kubelet says so.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;

/// One component workload as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `apps`.
    pub group: String,
    /// `deployments` or `daemonsets`.
    pub resource: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// Its status says every replica runs the current template and is available.
    pub ready: bool,
    /// Why its pods do not start, if the kubelet says (an image that cannot be pulled).
    pub problem: Option<String>,
}

impl Workload {
    /// A Deployment: ready when its controller saw the current generation and
    /// `updatedReplicas` and `availableReplicas` reach `spec.replicas`.
    pub fn deployment(d: &Deployment) -> Self {
        let generation = d.metadata.generation.unwrap_or(0);
        let want = d.spec.replicas.unwrap_or(1);
        let ready = d.status.as_ref().is_some_and(|s| {
            s.observed_generation.unwrap_or(0) >= generation
                && s.updated_replicas.unwrap_or(0) >= want
                && s.available_replicas.unwrap_or(0) >= want
        });
        Self::new("deployments", &d.metadata, generation, ready)
    }

    /// A DaemonSet: ready when its controller saw the current generation, it is scheduled
    /// somewhere, and every scheduled pod is updated and available (upstream's test too).
    pub fn daemonset(d: &DaemonSet) -> Self {
        let generation = d.metadata.generation.unwrap_or(0);
        let ready = d.status.as_ref().is_some_and(|s| {
            let want = s.desired_number_scheduled;
            want > 0
                && s.observed_generation.unwrap_or(0) >= generation
                && s.updated_number_scheduled.unwrap_or(0) >= want
                && s.number_available.unwrap_or(0) >= want
        });
        Self::new("daemonsets", &d.metadata, generation, ready)
    }

    fn new(
        resource: &str,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        generation: i64,
        ready: bool,
    ) -> Self {
        Workload {
            group: "apps".into(),
            resource: resource.into(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            generation,
            ready,
            problem: None,
        }
    }

    /// Notes the first pod of `pods` (the workload's) whose image cannot be pulled.
    pub fn with_pods(mut self, pods: &[Pod]) -> Self {
        self.problem = pods.iter().find_map(pull_problem);
        self
    }
}

/// The kubelet's waiting reasons for an image it cannot get.
const PULL_FAILURES: &[&str] = &["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];

/// `pod NS/NAME container C: REASON: MESSAGE` if a container of `pod` waits for an image it
/// cannot pull.
pub fn pull_problem(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        PULL_FAILURES.contains(&reason).then(|| {
            format!(
                "pod {}/{} container {}: {reason}: {}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default(),
                c.name,
                waiting
                    .message
                    .as_deref()
                    .unwrap_or("the image cannot be pulled")
            )
        })
    })
}
