use super::*;
use crate::snapshot::content::build;
use crate::snapshot::testing::*;
use crate::snapshot::volumes::decide;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::snapshot::v1beta1::VirtualMachineSnapshotContentStatus;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).expect("a time")
}

fn snapshot() -> VirtualMachineSnapshot {
    let mut s: VirtualMachineSnapshot = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s1", "namespace": "ns", "uid": "snap-uid"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm1"}}
    }))
    .expect("the snapshot decodes");
    s.metadata.creation_timestamp = Some(Time(t(1_000)));
    s
}

fn source(locked: bool, online: bool) -> Source {
    Source {
        uid: "vm-uid".into(),
        locked,
        blocker: String::new(),
        online,
        paused: false,
    }
}

fn cond<'a>(st: &'a VirtualMachineSnapshotStatus, t: &str) -> (&'a str, &'a str) {
    conditions::get(&st.conditions, t).expect("the condition is set")
}

#[test]
fn an_online_snapshot_in_progress_is_online_without_a_guest_agent() {
    let src = source(true, true);
    let st = compute(Facts {
        snapshot: &snapshot(),
        source: Some(&src),
        content: None,
        failure: None,
        now: t(1_010),
    });
    assert_eq!(st.phase.as_deref(), Some(IN_PROGRESS));
    assert_eq!(st.source_uid.as_deref(), Some("vm-uid"));
    assert_eq!(st.ready_to_use, Some(false));
    assert_eq!(cond(&st, PROGRESSING), ("True", lock::LOCKED));
    assert_eq!(cond(&st, READY), ("False", "Not ready"));
    assert_eq!(
        st.indications,
        Some(vec!["NoGuestAgent".to_string(), "Online".into()])
    );
    let msgs = st.source_indications.expect("source indications");
    assert!(msgs[0].message.starts_with("Guest agent was not available"));
}

#[test]
fn an_unlocked_source_says_why() {
    let mut src = source(false, false);
    src.blocker = " source ns/vm1 volume not bound: data-claim".into();
    let st = compute(Facts {
        snapshot: &snapshot(),
        source: Some(&src),
        content: None,
        failure: None,
        now: t(1_010),
    });
    assert_eq!(
        cond(&st, PROGRESSING),
        (
            "False",
            "Source not locked source ns/vm1 volume not bound: data-claim"
        )
    );
    assert_eq!(st.indications, None, "offline: no indications");
    let st = compute(Facts {
        snapshot: &snapshot(),
        source: None,
        content: None,
        failure: None,
        now: t(1_010),
    });
    assert_eq!(cond(&st, PROGRESSING), ("False", "Source does not exist"));
}

#[test]
fn a_created_content_makes_it_succeeded_and_ready_when_the_content_is() {
    let mut claims = claims();
    claims.insert("data-claim".into(), claim("data-claim", "other"));
    let inclusion = decide(&vm(), &claims, &storage_classes(), &snapshot_classes());
    let mut content = build(&snapshot(), &vm(), &inclusion.included);
    content.status = Some(VirtualMachineSnapshotContentStatus {
        creation_time: Some(Time(t(1_020))),
        ready_to_use: Some(true),
        ..Default::default()
    });
    let src = source(true, false);
    let st = compute(Facts {
        snapshot: &snapshot(),
        source: Some(&src),
        content: Some(&content),
        failure: None,
        now: t(1_030),
    });
    assert_eq!(st.phase.as_deref(), Some(SUCCEEDED));
    assert_eq!(st.ready_to_use, Some(true));
    assert_eq!(st.creation_time, Some(Time(t(1_020))));
    assert_eq!(
        st.virtual_machine_snapshot_content_name.as_deref(),
        Some("vmsnapshot-content-snap-uid")
    );
    assert_eq!(cond(&st, PROGRESSING), ("False", "Operation complete"));
    assert_eq!(cond(&st, READY), ("True", "Ready"));
    let lists = st.snapshot_volumes.as_ref().expect("volume lists");
    assert_eq!(lists.included_volumes, Some(vec!["root".to_string()]));
    assert_eq!(
        lists.excluded_volumes,
        Some(vec!["data".to_string(), "boot".into(), "init".into()])
    );
    assert_eq!(st.indications, Some(vec!["PartialSnapshot".to_string()]));
}

#[test]
fn past_the_deadline_it_fails_and_stays_failed() {
    let src = source(true, true);
    let facts = |s: &VirtualMachineSnapshot, now| {
        compute(Facts {
            snapshot: s,
            source: Some(&src),
            content: None,
            failure: None,
            now,
        })
    };
    let mut s = snapshot();
    assert_eq!(facts(&s, t(1_299)).phase.as_deref(), Some(IN_PROGRESS));
    let st = facts(&s, t(1_301));
    assert_eq!(st.phase.as_deref(), Some(FAILED));
    assert_eq!(cond(&st, FAILURE), ("True", DEADLINE_EXCEEDED));
    assert_eq!(cond(&st, PROGRESSING), ("False", "Operation failed"));
    s.status = Some(st);
    assert!(terminating(&s, t(1_301)));
    assert_eq!(facts(&s, t(5_000)).phase.as_deref(), Some(FAILED));

    let mut none = snapshot();
    none.spec.failure_deadline = Some("0".into());
    assert_eq!(facts(&none, t(99_999)).phase.as_deref(), Some(IN_PROGRESS));
    assert_eq!(deadline(&none), None);
    none.spec.failure_deadline = Some("1m".into());
    assert_eq!(deadline(&none), Some(t(1_060)));
}

#[test]
fn nothing_to_copy_fails_naming_why() {
    let src = source(true, false);
    let st = compute(Facts {
        snapshot: &snapshot(),
        source: Some(&src),
        content: None,
        failure: Some("no volume of VirtualMachine ns/vm1 can be snapshotted: volume root: x"),
        now: t(1_010),
    });
    assert_eq!(st.phase.as_deref(), Some(FAILED));
    let (status, reason) = cond(&st, FAILURE);
    assert_eq!(status, "True");
    assert!(reason.contains("volume root: x"));
    assert!(
        st.error
            .and_then(|e| e.message)
            .is_some_and(|m| m.contains("volume root"))
    );
}

#[test]
fn deleting_while_in_progress_is_phase_deleting() {
    let mut s = snapshot();
    s.metadata.deletion_timestamp = Some(Time(t(1_005)));
    let src = source(true, true);
    let st = compute(Facts {
        snapshot: &s,
        source: Some(&src),
        content: None,
        failure: None,
        now: t(1_010),
    });
    assert_eq!(st.phase.as_deref(), Some(DELETING));
    assert_eq!(cond(&st, PROGRESSING), ("False", "VM snapshot is deleting"));
}

#[test]
fn the_content_goes_with_the_snapshot_unless_retained_and_ready() {
    let inclusion = decide(&vm(), &claims(), &storage_classes(), &snapshot_classes());
    let mut content = build(&snapshot(), &vm(), &inclusion.included);
    let mut s = snapshot();
    assert!(deletes_content(&s, &content));
    s.spec.deletion_policy = Some("Retain".into());
    assert!(
        deletes_content(&s, &content),
        "an unready content is never kept"
    );
    content.status = Some(VirtualMachineSnapshotContentStatus {
        ready_to_use: Some(true),
        ..Default::default()
    });
    assert!(!deletes_content(&s, &content));
}
