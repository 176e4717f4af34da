//! Which of a VMI's virt-launcher pods runs its guest now. Without a migration it is the VMI's
//! oldest pod that is no migration's target; while a migration runs (or after one failed) it is
//! the source pod the VMI's `status.migrationState` names; once a migration completed, its
//! target pod. Pure: the VMI controller and the migration controller decide with it.

use k8s_openapi::api::core::v1::Pod;
use kubevirt_api::core::v1::VirtualMachineInstance;

use super::MIGRATION_JOB_LABEL;

/// The migration uid `pod` is the target of, if it is a migration's target pod.
pub fn migration_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(MIGRATION_JOB_LABEL)
        .map(String::as_str)
}

/// Whether the VMI's last migration moved the guest (completed, not failed).
pub fn migrated(vmi: &VirtualMachineInstance) -> bool {
    vmi.status
        .as_ref()
        .and_then(|s| s.migration_state.as_ref())
        .is_some_and(|m| m.completed == Some(true) && m.failed != Some(true))
}

/// The pod of `pods` (the VMI's, by `kubevirt.io/created-by`) whose launcher runs the guest of
/// `vmi` now; `None` when that pod is not among them.
pub fn active_pod<'a>(vmi: &VirtualMachineInstance, pods: &'a [Pod]) -> Option<&'a Pod> {
    let by_name = |name: Option<&String>| {
        let name = name?;
        pods.iter().find(|p| p.metadata.name.as_ref() == Some(name))
    };
    let state = vmi.status.as_ref().and_then(|s| s.migration_state.as_ref());
    if let Some(m) = state {
        if migrated(vmi) {
            return by_name(m.target_pod.as_ref());
        }
        if m.source_pod.is_some() {
            return by_name(m.source_pod.as_ref());
        }
    }
    pods.iter()
        .filter(|p| migration_of(p).is_none())
        .min_by_key(|p| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.name.clone().unwrap_or_default(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kubevirt_api::core::v1::{
        VirtualMachineInstanceMigrationState, VirtualMachineInstanceStatus,
    };

    fn pod(name: &str, at: i64, migration: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(at).expect("time")));
        if let Some(m) = migration {
            p.metadata.labels = Some([(MIGRATION_JOB_LABEL.to_string(), m.to_string())].into());
        }
        p
    }

    fn vmi_with(state: Option<VirtualMachineInstanceMigrationState>) -> VirtualMachineInstance {
        let mut vmi = VirtualMachineInstance::new("v", Default::default());
        vmi.status = Some(VirtualMachineInstanceStatus {
            migration_state: state,
            ..Default::default()
        });
        vmi
    }

    fn state(
        source: &str,
        target: &str,
        completed: bool,
        failed: bool,
    ) -> VirtualMachineInstanceMigrationState {
        VirtualMachineInstanceMigrationState {
            source_pod: Some(source.into()),
            target_pod: Some(target.into()),
            completed: Some(completed),
            failed: Some(failed),
            ..Default::default()
        }
    }

    fn active<'a>(vmi: &VirtualMachineInstance, pods: &'a [Pod]) -> Option<&'a str> {
        active_pod(vmi, pods).and_then(|p| p.metadata.name.as_deref())
    }

    #[test]
    fn the_oldest_pod_that_is_no_target_runs_the_guest_without_a_migration() {
        let pods = [
            pod("b", 20, None),
            pod("t", 5, Some("m1")),
            pod("a", 10, None),
        ];
        assert_eq!(active(&vmi_with(None), &pods), Some("a"));
        assert_eq!(active(&vmi_with(None), &pods[1..2]), None);
    }

    #[test]
    fn the_source_runs_it_until_the_migration_completes_and_the_target_after() {
        let pods = [
            pod("a", 10, None),
            pod("t1", 20, Some("m1")),
            pod("t2", 30, Some("m2")),
        ];
        let running = vmi_with(Some(state("a", "t1", false, false)));
        assert_eq!(active(&running, &pods), Some("a"));
        let failed = vmi_with(Some(state("a", "t1", true, true)));
        assert_eq!(active(&failed, &pods), Some("a"));
        let done = vmi_with(Some(state("a", "t1", true, false)));
        assert_eq!(active(&done, &pods), Some("t1"));
        // A second migration moves it from the first one's target.
        let second = vmi_with(Some(state("t1", "t2", false, false)));
        assert_eq!(active(&second, &pods), Some("t1"));
        let second_done = vmi_with(Some(state("t1", "t2", true, false)));
        assert_eq!(active(&second_done, &pods), Some("t2"));
        // The target pod is gone after it took over: the VMI has no pod.
        assert_eq!(active(&done, &pods[..1]), None);
    }
}
