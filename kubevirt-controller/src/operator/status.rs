//! The `KubeVirt` CR's status, as upstream's virt-operator writes it: the phase (Deploying →
//! Deployed, Deleting → Deleted), the conditions Available, Progressing and Degraded (and
//! Created, Synchronized) with upstream's reasons and messages, the target and observed version
//! and registry, the operator's version, `observedGeneration` and the `generations` of the
//! components' workloads. Pure: what is observed in, the status out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::core::v1::{GenerationStatus, KubeVirtCondition, KubeVirtStatus};

use super::components::Install;
use super::workload::Workload;

/// The finalizer the operator keeps on a CR it installed from until everything is removed.
pub const FINALIZER: &str = "foregroundDeleteKubeVirt";

/// Phases.
pub mod phase {
    /// Components are being installed or rolled.
    pub const DEPLOYING: &str = "Deploying";
    /// Every component is ready.
    pub const DEPLOYED: &str = "Deployed";
    /// The CR is being deleted (or its deletion is refused while workloads exist).
    pub const DELETING: &str = "Deleting";
    /// Everything was removed.
    pub const DELETED: &str = "Deleted";
}

/// Upstream's condition reasons.
pub mod reason {
    /// A second CR while one is active.
    pub const EXISTING: &str = "ExistingDeployment";
    /// Installing failed (or the spec is not valid).
    pub const DEPLOYMENT_FAILED: &str = "DeploymentFailed";
    /// Removing failed or is refused.
    pub const DELETION_FAILED: &str = "DeletionFailed";
    /// Every object exists.
    pub const CREATED: &str = "AllResourcesCreated";
    /// Every component is ready.
    pub const READY: &str = "AllComponentsReady";
    /// A first install is progressing.
    pub const DEPLOYING: &str = "DeploymentInProgress";
    /// A version change is rolling.
    pub const UPDATING: &str = "UpdateInProgress";
    /// The CR is being deleted.
    pub const DELETING: &str = "DeletionInProgress";
}

/// Sets condition `type_` to `status`/`reason`/`message`; its transition time moves only when
/// one of them changes (as upstream's `SetConditionTimestamps`).
fn set(
    conds: &mut Vec<KubeVirtCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let fresh = KubeVirtCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c)
            if c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message) => {}
        Some(c) => *c = fresh,
        None => conds.push(fresh),
    }
}

fn remove(conds: &mut Vec<KubeVirtCondition>, type_: &str) {
    conds.retain(|c| c.type_ != type_);
}

fn three(
    conds: &mut Vec<KubeVirtCondition>,
    [a, p, d]: [&str; 3],
    reason: &str,
    message: &str,
    now: &Time,
) {
    set(conds, "Available", a, reason, message, now);
    set(conds, "Progressing", p, reason, message, now);
    set(conds, "Degraded", d, reason, message, now);
}

/// What reconciling an active CR found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was applied; the workloads are as observed.
    Applied(Vec<Workload>),
    /// The spec is not valid (field paths in the message); nothing was changed.
    Invalid(String),
    /// Applying failed.
    Failed(String),
}

/// The status of the active CR: `previous` updated for `install` and `outcome`.
pub fn installing(
    previous: Option<&KubeVirtStatus>,
    generation: Option<i64>,
    install: &Install,
    operator_version: &str,
    outcome: &Outcome,
    now: &Time,
) -> KubeVirtStatus {
    let mut s = previous.cloned().unwrap_or_default();
    let mut conds = s.conditions.take().unwrap_or_default();
    s.operator_version = Some(operator_version.into());
    s.observed_generation = generation;
    match outcome {
        Outcome::Invalid(message) | Outcome::Failed(message) => {
            let message = format!("An error occurred during deployment: {message}");
            set(
                &mut conds,
                "Synchronized",
                "False",
                reason::DEPLOYMENT_FAILED,
                &message,
                now,
            );
            three(
                &mut conds,
                ["False", "False", "True"],
                reason::DEPLOYMENT_FAILED,
                &message,
                now,
            );
            if s.phase.is_none() {
                s.phase = Some(phase::DEPLOYING.into());
            }
        }
        Outcome::Applied(workloads) => {
            s.target_kube_virt_version = Some(install.tag.clone());
            s.target_kube_virt_registry = Some(install.registry.clone());
            s.generations = Some(
                workloads
                    .iter()
                    .map(|w| GenerationStatus {
                        group: w.group.clone(),
                        resource: w.resource.clone(),
                        namespace: Some(w.namespace.clone()),
                        name: w.name.clone(),
                        last_generation: w.generation,
                        hash: None,
                    })
                    .collect(),
            );
            remove(&mut conds, "Synchronized");
            set(
                &mut conds,
                "Created",
                "True",
                reason::CREATED,
                "All resources were created.",
                now,
            );
            let ready = !workloads.is_empty() && workloads.iter().all(|w| w.ready);
            if ready {
                s.phase = Some(phase::DEPLOYED.into());
                s.observed_kube_virt_version = Some(install.tag.clone());
                s.observed_kube_virt_registry = Some(install.registry.clone());
                three(
                    &mut conds,
                    ["True", "False", "False"],
                    reason::READY,
                    "All components are ready.",
                    now,
                );
            } else {
                s.phase = Some(phase::DEPLOYING.into());
                let observed = (
                    s.observed_kube_virt_version.clone(),
                    s.observed_kube_virt_registry.clone(),
                );
                let problem = workloads.iter().find_map(|w| w.problem.clone());
                match observed {
                    _ if problem.is_some() => {
                        // The components cannot start: Degraded, with the kubelet's reason.
                        let message = format!(
                            "An error occurred during deployment: {}",
                            problem.unwrap_or_default()
                        );
                        let available = if s.observed_kube_virt_version.is_some() {
                            "True"
                        } else {
                            "False"
                        };
                        three(
                            &mut conds,
                            [available, "True", "True"],
                            reason::DEPLOYMENT_FAILED,
                            &message,
                            now,
                        );
                    }
                    (Some(version), Some(registry)) => {
                        // An update: the previous version still serves.
                        let message = format!(
                            "Transitioning from previous version {version} with registry {registry} to target version {} using registry {}",
                            install.tag, install.registry
                        );
                        three(
                            &mut conds,
                            ["True", "True", "True"],
                            reason::UPDATING,
                            &message,
                            now,
                        );
                    }
                    _ => {
                        let message = format!(
                            "Deploying version {} with registry {}",
                            install.tag, install.registry
                        );
                        three(
                            &mut conds,
                            ["False", "True", "False"],
                            reason::DEPLOYING,
                            &message,
                            now,
                        );
                    }
                }
            }
        }
    }
    s.conditions = Some(conds);
    s
}

/// The status of a CR left alone because another is active: only Synchronized=False, as
/// upstream (so that whoever reads Available ignores this CR).
pub fn existing_deployment(previous: Option<&KubeVirtStatus>, now: &Time) -> KubeVirtStatus {
    let mut s = previous.cloned().unwrap_or_default();
    let mut conds = s.conditions.take().unwrap_or_default();
    set(
        &mut conds,
        "Synchronized",
        "False",
        reason::EXISTING,
        "There is an active KubeVirt deployment",
        now,
    );
    s.conditions = Some(conds);
    s
}

/// The status of a CR being deleted; `refused` is why nothing is removed yet (workloads exist),
/// `done` says everything is gone.
pub fn deleting(
    previous: Option<&KubeVirtStatus>,
    refused: Option<&str>,
    done: bool,
    now: &Time,
) -> KubeVirtStatus {
    let mut s = previous.cloned().unwrap_or_default();
    let mut conds = s.conditions.take().unwrap_or_default();
    remove(&mut conds, "Created");
    three(
        &mut conds,
        ["False", "False", "True"],
        reason::DELETING,
        "Deletion was triggered",
        now,
    );
    match refused {
        Some(why) => set(
            &mut conds,
            "Synchronized",
            "False",
            reason::DELETION_FAILED,
            &format!("An error occurred during deletion: {why}"),
            now,
        ),
        None => remove(&mut conds, "Synchronized"),
    }
    s.phase = Some(
        if done {
            phase::DELETED
        } else {
            phase::DELETING
        }
        .into(),
    );
    if done {
        s.observed_kube_virt_version = None;
        s.observed_kube_virt_registry = None;
        s.generations = None;
    }
    s.conditions = Some(conds);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::components::tests::install;
    use k8s_openapi::api::apps::v1::{
        DaemonSet, DaemonSetStatus, Deployment, DeploymentSpec, DeploymentStatus,
    };
    use k8s_openapi::api::core::v1::Pod;

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn cond<'a>(s: &'a KubeVirtStatus, t: &str) -> &'a KubeVirtCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    fn deployment(generation: i64, observed: i64, available: i32) -> Deployment {
        Deployment {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("virt-api".into()),
                namespace: Some("kubevirt".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(1),
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(available),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_workload_is_ready_when_its_current_template_is_available_everywhere() {
        assert!(Workload::deployment(&deployment(2, 2, 1)).ready);
        assert!(
            !Workload::deployment(&deployment(3, 2, 1)).ready,
            "a stale status"
        );
        assert!(!Workload::deployment(&deployment(2, 2, 0)).ready);
        let mut ds = DaemonSet::default();
        ds.metadata.generation = Some(1);
        assert!(!Workload::daemonset(&ds).ready, "no status");
        ds.status = Some(DaemonSetStatus {
            desired_number_scheduled: 1,
            observed_generation: Some(1),
            updated_number_scheduled: Some(1),
            number_available: Some(1),
            ..Default::default()
        });
        assert!(Workload::daemonset(&ds).ready);
        ds.status.as_mut().unwrap().desired_number_scheduled = 0;
        assert!(!Workload::daemonset(&ds).ready, "scheduled nowhere");
    }

    #[test]
    fn deploying_then_deployed_then_updating() {
        let i = install();
        let pending = Outcome::Applied(vec![Workload::deployment(&deployment(1, 0, 0))]);
        let s = installing(None, Some(1), &i, "v0.1.0", &pending, &now());
        assert_eq!(s.phase.as_deref(), Some("Deploying"));
        let p = cond(&s, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("True", Some("DeploymentInProgress"))
        );
        assert_eq!(
            p.message.as_deref(),
            Some("Deploying version v0.1.0 with registry 127.0.0.1:5000")
        );
        assert_eq!(cond(&s, "Available").status, "False");
        assert_eq!(s.observed_kube_virt_version, None);

        let ready = Outcome::Applied(vec![Workload::deployment(&deployment(1, 1, 1))]);
        let s = installing(Some(&s), Some(1), &i, "v0.1.0", &ready, &now());
        assert_eq!(s.phase.as_deref(), Some("Deployed"));
        let a = cond(&s, "Available");
        assert_eq!(
            (a.status.as_str(), a.reason.as_deref()),
            ("True", Some("AllComponentsReady"))
        );
        assert_eq!(s.observed_kube_virt_version.as_deref(), Some("v0.1.0"));
        assert_eq!(
            s.observed_kube_virt_registry.as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(s.operator_version.as_deref(), Some("v0.1.0"));
        let g = &s.generations.as_ref().unwrap()[0];
        assert_eq!(
            (g.resource.as_str(), g.name.as_str(), g.last_generation),
            ("deployments", "virt-api", 1)
        );

        let next = Install {
            tag: "v0.2.0".into(),
            ..i
        };
        let rolling = Outcome::Applied(vec![Workload::deployment(&deployment(2, 1, 1))]);
        let s = installing(Some(&s), Some(2), &next, "v0.1.0", &rolling, &now());
        assert_eq!(s.phase.as_deref(), Some("Deploying"));
        let a = cond(&s, "Available");
        assert_eq!(
            (a.status.as_str(), a.reason.as_deref()),
            ("True", Some("UpdateInProgress"))
        );
        assert_eq!(s.target_kube_virt_version.as_deref(), Some("v0.2.0"));
        assert_eq!(s.observed_kube_virt_version.as_deref(), Some("v0.1.0"));
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_degraded_with_the_kubelets_reason() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "virt-api-1", "namespace": "kubevirt"},
            "status": {"containerStatuses": [{"name": "virt-api", "image": "r/virt-api:v1",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}
        }))
        .unwrap();
        let w = Workload::deployment(&deployment(1, 1, 0)).with_pods(&[pod]);
        assert_eq!(
            w.problem.as_deref(),
            Some("pod kubevirt/virt-api-1 container virt-api: ErrImagePull: not found")
        );
        let s = installing(
            None,
            Some(1),
            &install(),
            "v0.1.0",
            &Outcome::Applied(vec![w]),
            &now(),
        );
        let d = cond(&s, "Degraded");
        assert_eq!(d.status, "True");
        assert!(
            d.message
                .as_deref()
                .unwrap()
                .ends_with("ErrImagePull: not found")
        );
        assert_eq!(s.phase.as_deref(), Some("Deploying"));
    }

    #[test]
    fn an_invalid_spec_is_degraded_with_the_message() {
        let s = installing(
            None,
            Some(3),
            &install(),
            "v0.1.0",
            &Outcome::Invalid("spec.imageTag: bad".into()),
            &now(),
        );
        let d = cond(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_deref()),
            ("True", Some("DeploymentFailed"))
        );
        assert_eq!(
            d.message.as_deref(),
            Some("An error occurred during deployment: spec.imageTag: bad")
        );
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn a_second_cr_only_gets_synchronized_false() {
        let s = existing_deployment(None, &now());
        let c = s.conditions.as_ref().unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason.as_deref(), Some("ExistingDeployment"));
        assert_eq!(
            c[0].message.as_deref(),
            Some("There is an active KubeVirt deployment")
        );
        assert_eq!(s.phase, None);
    }

    #[test]
    fn a_refused_deletion_says_why_and_keeps_deleting() {
        let s = deleting(
            None,
            Some("there are still Virtual Machines present"),
            false,
            &now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Deleting"));
        assert_eq!(
            cond(&s, "Synchronized").message.as_deref(),
            Some("An error occurred during deletion: there are still Virtual Machines present")
        );
        let s = deleting(Some(&s), None, true, &now());
        assert_eq!(s.phase.as_deref(), Some("Deleted"));
        assert!(
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .all(|c| c.type_ != "Synchronized")
        );
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time() {
        let mut conds = Vec::new();
        set(&mut conds, "Available", "True", "R", "m", &now());
        let later = Time(jiff::Timestamp::from_second(1_900_000_000).unwrap());
        set(&mut conds, "Available", "True", "R", "m", &later);
        assert_eq!(conds[0].last_transition_time, Some(now()));
        set(&mut conds, "Available", "False", "R", "m", &later);
        assert_eq!(conds[0].last_transition_time, Some(later));
    }
}
