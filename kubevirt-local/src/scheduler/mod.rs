//! The local scheduler: binds pods without `spec.nodeName` to a node through the `pods/binding`
//! subresource, as kube-scheduler does, with its default filters (node ready and schedulable,
//! taints/tolerations, `nodeSelector` and required node affinity, resource requests including
//! extended resources such as `devices.kubevirt.io/kvm`) and its least-allocated score.
//! Its VolumeBinding ([`volumes`]) keeps pods with missing or unbound Immediate claims
//! unschedulable, filters nodes by bound volumes' node affinity, and for WaitForFirstConsumer
//! claims names the chosen node in the claim and binds the pod once the claims are bound.
//!
//! Only pods whose `spec.schedulerName` is `default-scheduler` are handled. A pod that fits
//! nowhere stays `Pending` with `PodScheduled=False`, reason `Unschedulable`, upstream's message
//! (`0/1 nodes are available: 1 Insufficient memory.`) and a `FailedScheduling` event; it is
//! tried again whenever a pod or node changes. The scheduler talks to the API server only
//! through kube-rs (watches of pods, nodes, claims, volumes and StorageClasses, the binding and
//! status subresources, claim annotations, events).

pub mod fit;
pub mod placement;
pub mod resources;
pub mod volumes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::recorder::{EventType, record};
use fit::Decision;

/// The `spec.schedulerName` this scheduler serves.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Even without a change, pending pods are looked at again this often.
const RESYNC: Duration = Duration::from_secs(10);

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Is `pod` one for this scheduler to place?
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec.scheduler_name.as_deref().unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The scheduler's state between passes.
struct Scheduler {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    /// Pods bound by this scheduler that the watch has not shown bound yet (upstream's
    /// "assumed" pods), so their requests count at once: uid -> the pod as bound.
    assumed: HashMap<String, Arc<Pod>>,
}

impl Scheduler {
    /// Look at every pending pod once. Decisions are made one pod at a time against the
    /// cluster as this pass has already placed it (bound pods count at once, as upstream's
    /// "assumed" pods); the bindings of one pass are then sent together and their events are
    /// recorded off the critical path, so a burst of new pods is bound in one round trip's time
    /// rather than one after the other. Nothing is copied when nothing is pending.
    async fn pass(&mut self, on_sync: &impl Fn(Result<String, String>)) {
        let pods: Vec<Arc<Pod>> = self.pods.state();
        // Forget assumptions the watch has caught up with (or whose pods are gone).
        let by_uid: HashMap<&str, &Arc<Pod>> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.as_deref()?, p)))
            .collect();
        self.assumed.retain(|uid, _| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|p| wants_scheduling(p))
        });
        let mut pending: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| wants_scheduling(p))
            .filter(|p| {
                p.metadata
                    .uid
                    .as_ref()
                    .is_none_or(|u| !self.assumed.contains_key(u))
            })
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        let nodes: Vec<Node> = self.nodes.state().iter().map(|n| (**n).clone()).collect();
        let claims: Vec<PersistentVolumeClaim> =
            self.claims.state().iter().map(|c| (**c).clone()).collect();
        let volumes: Vec<PersistentVolume> =
            self.volumes.state().iter().map(|v| (**v).clone()).collect();
        let classes: Vec<StorageClass> =
            self.classes.state().iter().map(|c| (**c).clone()).collect();
        // The cluster as placed so far: assumed pods as bound.
        let mut view: Vec<Arc<Pod>> = pods
            .iter()
            .map(|p| {
                p.metadata
                    .uid
                    .as_ref()
                    .and_then(|u| self.assumed.get(u))
                    .cloned()
                    .unwrap_or_else(|| Arc::clone(p))
            })
            .collect();
        // Oldest first, as upstream's queue orders by priority then arrival.
        pending.sort_by(|a, b| {
            let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            prio(b).cmp(&prio(a)).then_with(|| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            })
        });
        let mut binds = Vec::new();
        for pod in pending {
            let who = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            let pod_claims = volumes::prefilter(&pod, &claims, &classes);
            let decision = match &pod_claims {
                Err(why) => Ok(Decision::Unschedulable(format!(
                    "0/{} nodes are available: {why}.",
                    nodes.len()
                ))),
                Ok(pc) => fit::decide_with(&pod, &nodes, &view, |n| {
                    volumes::filter(pc, n, &volumes, &classes)
                }),
            };
            let decision = match decision {
                Ok(d) => d,
                Err(bad) => Decision::Unschedulable(format!("invalid resource request: {bad}")),
            };
            let waiting = pod_claims.map(|pc| pc.waiting).unwrap_or_default();
            let outcome = match decision {
                Decision::Bind(node) if !waiting.is_empty() => self
                    .select_node(&waiting, &node)
                    .await
                    .map(|_| format!("{who} waits on node {node} for its volumes"))
                    .map_err(|e| format!("selecting {node} for the claims of {who}: {e}")),
                Decision::Bind(node) => {
                    let mut bound = (*pod).clone();
                    if let Some(spec) = bound.spec.as_mut() {
                        spec.node_name = Some(node.clone());
                    }
                    let bound = Arc::new(bound);
                    if let Some(uid) = &pod.metadata.uid {
                        self.assumed.insert(uid.clone(), Arc::clone(&bound));
                    }
                    if let Some(slot) = view.iter_mut().find(|p| p.metadata.uid == pod.metadata.uid)
                    {
                        *slot = bound;
                    }
                    binds.push(self.bind(pod, node, who));
                    continue;
                }
                Decision::Unschedulable(message) => self
                    .unschedulable(&pod, &message)
                    .await
                    .map(|_| format!("{who} unschedulable: {message}"))
                    .map_err(|e| format!("marking {who} unschedulable: {e}")),
            };
            on_sync(outcome);
        }
        for (uid, outcome) in futures::future::join_all(binds).await {
            if outcome.is_err()
                && let Some(uid) = uid
            {
                // Not bound: its requests no longer count, and the next pass tries again.
                self.assumed.remove(&uid);
            }
            on_sync(outcome);
        }
    }

    /// Tell the provisioner which node the pod's waiting claims are for (claims that already
    /// name one keep it).
    async fn select_node(
        &self,
        waiting: &[PersistentVolumeClaim],
        node: &str,
    ) -> Result<(), kube::Error> {
        for claim in waiting {
            if claim
                .annotations()
                .contains_key(crate::volumes::plan::SELECTED_NODE)
            {
                continue;
            }
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default());
            // Against the claim as read: a claim another pass already gave a node keeps it.
            let patch = json!({"metadata": {"annotations": {
                crate::volumes::plan::SELECTED_NODE: node},
                "resourceVersion": claim.metadata.resource_version}});
            api.patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
        Ok(())
    }

    /// Binds `pod` to `node` through `pods/binding` and records the `Scheduled` event in the
    /// background; with the pod's uid, the outcome for `on_sync`.
    fn bind(
        &self,
        pod: Arc<Pod>,
        node: String,
        who: String,
    ) -> impl Future<Output = (Option<String>, Result<String, String>)> + use<> {
        let client = self.client.clone();
        async move {
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
            let bound: Result<serde_json::Value, _> = api
                .create_subresource("binding", &name, &PostParams::default(), &binding)
                .await;
            let uid = pod.metadata.uid.clone();
            if let Err(e) = bound {
                return (uid, Err(format!("binding {who} to {node}: {e}")));
            }
            let message = format!("Successfully assigned {ns}/{name} to {node}");
            tokio::spawn(async move {
                record(
                    &client,
                    SCHEDULER_NAME,
                    pod.as_ref(),
                    EventType::Normal,
                    "Scheduled",
                    &message,
                )
                .await;
            });
            (uid, Ok(format!("{who} bound to {node}")))
        }
    }

    /// Set `PodScheduled=False/Unschedulable` with `message` and record a `FailedScheduling`
    /// event, unless the pod already says exactly that.
    async fn unschedulable(&self, pod: &Pod, message: &str) -> Result<(), kube::Error> {
        let conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let same = conditions.iter().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        });
        if same {
            return Ok(());
        }
        let mut list: Vec<serde_json::Value> = conditions
            .iter()
            .filter(|c| c.type_ != "PodScheduled")
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        list.push(
            json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null, "lastTransitionTime": now()}),
        );
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"phase": "Pending", "conditions": list}});
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        record(
            &self.client,
            SCHEDULER_NAME,
            pod,
            EventType::Warning,
            "FailedScheduling",
            message,
        )
        .await;
        Ok(())
    }
}

/// Run the scheduler until `shutdown` resolves; `on_sync` hears every binding and every
/// unschedulable verdict.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_sync: impl Fn(Result<String, String>) + Send + 'static,
) {
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .map(|_| ());
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .map(|_| ());
    let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, volume_writer) = reflector::store::<PersistentVolume>();
    let (classes, class_writer) = reflector::store::<StorageClass>();
    let claim_events = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(claim_writer)
    .map(|_| ());
    let volume_events = watcher(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(volume_writer)
    .map(|_| ());
    let class_events = watcher(
        Api::<StorageClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(class_writer)
    .map(|_| ());
    let ticks = tokio_stream_ticks(RESYNC);
    let mut changes = futures::stream::select_all(vec![
        pod_events.boxed(),
        node_events.boxed(),
        claim_events.boxed(),
        volume_events.boxed(),
        class_events.boxed(),
        ticks.boxed(),
    ])
    .ready_chunks(256)
    .take_until(shutdown)
    .boxed();
    let mut s = Scheduler {
        client,
        pods: pods.clone(),
        nodes: nodes.clone(),
        claims: claims.clone(),
        volumes: volumes.clone(),
        classes: classes.clone(),
        assumed: HashMap::new(),
    };
    // Decide only on a full view of the cluster (the future is polled until it is done, never
    // after).
    let ready = futures::future::join5(
        pods.wait_until_ready(),
        nodes.wait_until_ready(),
        claims.wait_until_ready(),
        volumes.wait_until_ready(),
        classes.wait_until_ready(),
    );
    tokio::pin!(ready);
    let mut have_all = false;
    while changes.next().await.is_some() {
        have_all = have_all || futures::poll!(&mut ready).is_ready();
        if !have_all {
            continue;
        }
        s.pass(&on_sync).await;
    }
}

/// A stream that yields every `period`.
fn tokio_stream_ticks(period: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(tokio::time::interval(period), |mut i| async move {
        i.tick().await;
        Some(((), i))
    })
}
