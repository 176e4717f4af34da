use serde_json::{Value, json};

use super::*;

const NOW: &str = "2026-12-05T12:00:00Z";

fn config() -> DataVolumeConfig {
    DataVolumeConfig::new("kubevirt-rs/cdi-importer:1")
}

fn dv(spec: Value, annotations: Value) -> DataVolume {
    serde_json::from_value(json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "root", "namespace": "ns", "uid": "dv-uid", "annotations": annotations},
        "spec": spec,
    }))
    .unwrap()
}

fn http() -> DataVolume {
    dv(
        json!({"source": {"http": {"url": "http://images.local/disk.qcow2"}},
               "storage": {"resources": {"requests": {"storage": "1Gi"}}}}),
        json!({}),
    )
}

fn claim(owner_uid: Option<&str>, phase: &str, annotations: Value) -> PersistentVolumeClaim {
    let owners = owner_uid.map_or(json!([]), |u| {
        json!([{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "root",
                "uid": u, "controller": true}])
    });
    serde_json::from_value(json!({
        "metadata": {"name": "root", "namespace": "ns", "ownerReferences": owners,
                     "annotations": annotations},
        "spec": {"resources": {"requests": {"storage": "1090Mi"}}},
        "status": {"phase": phase},
    }))
    .unwrap()
}

fn pod(phase: &str, container: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "importer-root", "namespace": "ns"},
        "status": {"phase": phase, "containerStatuses": [container]},
    }))
    .unwrap()
}

fn run(
    dv: &DataVolume,
    claim: Option<&PersistentVolumeClaim>,
    pod: Option<&Pod>,
    progress: Option<f64>,
) -> Plan {
    plan(Observed {
        dv,
        claim,
        pod,
        source_claim: None,
        profile: None,
        progress,
        config: &config(),
        now: NOW.parse().unwrap(),
    })
}

fn cond(p: &Plan, type_: &str) -> (String, Option<String>, Option<String>) {
    let c = p
        .status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn phase(p: &Plan) -> &str {
    p.status.phase.as_deref().unwrap()
}

#[test]
fn a_new_data_volume_gets_its_claim_then_its_importer() {
    let d = http();
    let p = run(&d, None, None, None);
    assert_eq!(phase(&p), "Pending");
    assert!(p.create_claim.is_some());
    assert!(p.create_pod.is_none(), "the pod waits for the claim");
    assert_eq!(cond(&p, "Bound").0, "Unknown");
    assert_eq!(p.status.claim_name.as_deref(), Some("root"));

    let c = claim(Some("dv-uid"), "Pending", json!({}));
    let p = run(&d, Some(&c), None, None);
    assert_eq!(phase(&p), "ImportScheduled");
    let pod = p.create_pod.as_ref().unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("importer-root"));
    assert_eq!(
        cond(&p, "Bound"),
        (
            "False".into(),
            Some("Pending".into()),
            Some("PVC root Pending".into())
        )
    );
}

#[test]
fn a_running_importer_shows_progress_and_success_marks_the_claim() {
    let d = http();
    let c = claim(Some("dv-uid"), "Bound", json!({}));
    let running = pod(
        "Running",
        json!({"name": "importer", "restartCount": 0, "ready": true,
        "image": "i", "imageID": "", "state": {"running": {}}}),
    );
    let p = run(&d, Some(&c), Some(&running), Some(42.5));
    assert_eq!(phase(&p), "ImportInProgress");
    assert_eq!(p.status.progress.as_deref(), Some("42.50%"));
    assert_eq!(cond(&p, "Running").0, "True");
    assert_eq!(
        cond(&p, "Bound"),
        (
            "True".into(),
            Some("Bound".into()),
            Some("PVC root Bound".into())
        )
    );

    let done = pod(
        "Succeeded",
        json!({"name": "importer", "restartCount": 0, "ready": false,
        "image": "i", "imageID": "",
        "state": {"terminated": {"exitCode": 0, "message": "Import Complete"}}}),
    );
    let p = run(&d, Some(&c), Some(&done), None);
    assert_eq!(phase(&p), "Succeeded");
    assert_eq!(p.annotate_claim[POD_PHASE], "Succeeded");
    assert!(p.delete_pod);
    assert_eq!(p.status.progress.as_deref(), Some("100.00%"));
    assert_eq!(cond(&p, "Ready").0, "True");
    assert_eq!(cond(&p, "Running").1.as_deref(), Some("Completed"));

    // Once marked, the claim alone says Succeeded: the pod is not made again.
    let marked = claim(Some("dv-uid"), "Bound", json!({POD_PHASE: "Succeeded"}));
    let p = run(&d, Some(&marked), None, None);
    assert_eq!(phase(&p), "Succeeded");
    assert!(p.create_pod.is_none() && !p.delete_pod);
}

#[test]
fn a_failing_importer_is_retried_and_says_why() {
    let d = http();
    let c = claim(Some("dv-uid"), "Bound", json!({}));
    let backing_off = pod(
        "Running",
        json!({"name": "importer", "restartCount": 3, "ready": false,
        "image": "i", "imageID": "",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1,
            "message": "Unable to connect to http data source: expected status code 200, got 404"}}}),
    );
    let p = run(&d, Some(&c), Some(&backing_off), None);
    assert_eq!(phase(&p), "ImportInProgress");
    assert_eq!(p.status.restart_count, Some(3));
    let (s, reason, message) = cond(&p, "Running");
    assert_eq!((s.as_str(), reason.as_deref()), ("False", Some("Error")));
    assert!(message.unwrap().contains("got 404"));
    assert!(!p.delete_pod && p.create_pod.is_none() && p.annotate_claim.is_empty());

    let failed = pod(
        "Failed",
        json!({"name": "importer", "restartCount": 0, "ready": false,
        "image": "i", "imageID": "",
        "state": {"terminated": {"exitCode": 2, "message": "not a disk image"}}}),
    );
    let p = run(&d, Some(&c), Some(&failed), None);
    assert_eq!(phase(&p), "Failed");
    assert_eq!(cond(&p, "Running").2.as_deref(), Some("not a disk image"));
}

#[test]
fn bad_specs_and_foreign_claims_create_nothing() {
    let no_size = dv(json!({"source": {"blank": {}}, "storage": {}}), json!({}));
    let p = run(&no_size, None, None, None);
    assert_eq!(phase(&p), "Pending");
    assert!(p.create_claim.is_none());
    let (_, reason, message) = cond(&p, "Ready");
    assert_eq!(reason.as_deref(), Some("InvalidSpec"));
    assert!(
        message
            .unwrap()
            .contains("spec.storage.resources.requests.storage")
    );

    let s3 = dv(
        json!({"source": {"s3": {"url": "s3://b/k"}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}),
        json!({}),
    );
    let p = run(&s3, None, None, None);
    assert!(p.create_claim.is_none());
    assert!(cond(&p, "Ready").2.unwrap().contains("s3 is not supported"));

    let foreign = claim(Some("someone-else"), "Bound", json!({}));
    let p = run(&http(), Some(&foreign), None, None);
    assert_eq!(phase(&p), "Pending");
    assert_eq!(cond(&p, "Ready").1.as_deref(), Some("ErrResourceExists"));
    assert!(p.create_pod.is_none() && !p.adopt_claim);
}

#[test]
fn an_unowned_claim_is_adopted_when_allowed() {
    let d = dv(
        json!({"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}),
        json!({ALLOW_CLAIM_ADOPTION: "true"}),
    );
    let orphan = claim(None, "Bound", json!({}));
    let p = run(&d, Some(&orphan), None, None);
    assert_eq!(phase(&p), "Succeeded");
    assert!(p.adopt_claim);
    assert_eq!(
        p.annotate_claim.get(POD_PHASE).map(String::as_str),
        Some("Succeeded"),
        "marked populated: no importer runs over it once owned"
    );
    let owned = claim(Some("dv-uid"), "Bound", json!({POD_PHASE: "Succeeded"}));
    let p = run(&d, Some(&owned), None, None);
    assert_eq!(phase(&p), "Succeeded");
    assert!(p.create_pod.is_none());
    // Without the annotation it is someone else's.
    let p = run(&http(), Some(&orphan), None, None);
    assert_eq!(phase(&p), "Pending");
}

#[test]
fn conditions_keep_their_transition_time() {
    let d = http();
    let c = claim(Some("dv-uid"), "Pending", json!({}));
    let first = run(&d, Some(&c), None, None);
    let mut again = d.clone();
    again.status = Some(first.status.clone());
    let later = plan(Observed {
        dv: &again,
        claim: Some(&c),
        pod: None,
        source_claim: None,
        profile: None,
        progress: None,
        config: &config(),
        now: "2026-12-05T12:05:00Z".parse().unwrap(),
    });
    assert_eq!(later.status.conditions, first.status.conditions);
}

#[test]
fn a_clone_waits_for_its_source_then_copies_it() {
    let d = dv(
        json!({"source": {"pvc": {"namespace": "ns", "name": "golden"}}, "storage": {}}),
        json!({}),
    );
    let observe = |claim, pod, source| {
        plan(Observed {
            dv: &d,
            claim,
            pod,
            source_claim: source,
            profile: None,
            progress: None,
            config: &config(),
            now: NOW.parse().unwrap(),
        })
    };
    let p = observe(None, None, None);
    assert_eq!(phase(&p), "Pending");
    assert!(p.create_claim.is_none());
    assert_eq!(cond(&p, "Ready").1.as_deref(), Some("CloneWithoutSource"));

    // The source is a DataVolume's claim still being imported: wait.
    let importing: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "golden", "namespace": "ns", "ownerReferences": [
            {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "name": "golden",
             "uid": "g", "controller": true}]},
        "spec": {"resources": {"requests": {"storage": "100Mi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "100Mi"}},
    }))
    .unwrap();
    let p = observe(None, None, Some(&importing));
    assert_eq!(cond(&p, "Ready").1.as_deref(), Some("CloneSourceNotReady"));
    assert!(p.create_claim.is_none());

    let mut golden = importing.clone();
    golden.metadata.annotations = Some([(POD_PHASE.to_string(), "Succeeded".to_string())].into());
    let p = observe(None, None, Some(&golden));
    let made = p
        .create_claim
        .expect("the target claim, sized as its source");
    let requests = made.spec.unwrap().resources.unwrap().requests.unwrap();
    assert_eq!(requests["storage"].0, (100u64 << 20).to_string());

    let target = claim(Some("dv-uid"), "Pending", json!({}));
    let p = observe(Some(&target), None, Some(&golden));
    assert_eq!(phase(&p), "CloneScheduled");
    assert!(p.create_pod.is_some());
    let running = pod(
        "Running",
        json!({"name": "importer", "restartCount": 0, "ready": true,
        "image": "i", "imageID": "", "state": {"running": {}}}),
    );
    let p = observe(Some(&target), Some(&running), Some(&golden));
    assert_eq!(phase(&p), "CloneInProgress");
}

#[test]
fn a_node_pull_image_that_cannot_be_pulled_or_served_is_named() {
    let d = dv(
        json!({"source": {"registry": {"url": "docker://r:5000/disks/no-such:v1", "pullMethod": "node"}},
               "storage": {"resources": {"requests": {"storage": "1Gi"}}}}),
        json!({}),
    );
    let c = claim(Some("dv-uid"), "Bound", json!({}));
    // The server's status sorts after the importer's; the importer runs, waiting for it.
    let with_server = |server: Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "importer-root", "namespace": "ns"},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "importer", "restartCount": 0, "ready": true, "image": "i",
                 "imageID": "", "state": {"running": {}}},
                server,
            ]},
        }))
        .unwrap()
    };
    let pulling = with_server(json!({"name": "server", "restartCount": 0, "ready": false,
        "image": "r:5000/disks/no-such:v1", "imageID": "",
        "state": {"waiting": {"reason": "ErrImagePull",
            "message": "failed to pull image \"r:5000/disks/no-such:v1\": not found"}}}));
    let p = run(&d, Some(&c), Some(&pulling), None);
    assert_eq!(phase(&p), "ImportScheduled");
    let (s, reason, message) = cond(&p, "Running");
    assert_eq!(
        (s.as_str(), reason.as_deref()),
        ("False", Some("ErrImagePull"))
    );
    assert!(message.unwrap().contains("no-such"));
    assert!(!p.delete_pod && p.create_pod.is_none());

    // An image without one file under /disk: the server's crash says so.
    let crashing = with_server(json!({"name": "server", "restartCount": 2, "ready": false,
        "image": "r", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1,
            "message": "no disk image file in /disk: the image must hold exactly one file there"}}}));
    let p = run(&d, Some(&c), Some(&crashing), None);
    let (_, reason, message) = cond(&p, "Running");
    assert_eq!(reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(
        message.as_deref(),
        Some(
            "server container: no disk image file in /disk: the image must hold exactly one file there"
        )
    );

    // Being created is no trouble: the importer's own state shows.
    let creating = with_server(json!({"name": "server", "restartCount": 0, "ready": false,
        "image": "r", "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}));
    let p = run(&d, Some(&c), Some(&creating), Some(10.0));
    assert_eq!(phase(&p), "ImportInProgress");
    assert_eq!(cond(&p, "Running").0, "True");
}
