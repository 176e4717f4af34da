use super::*;
use serde_json::json;

fn entry(key: &str, secs: u64) -> Entry {
    Entry {
        key: key.into(),
        age: Duration::from_secs(secs),
    }
}

fn keys(list: &[&str]) -> HashSet<String> {
    list.iter().map(|k| k.to_string()).collect()
}

fn vmi(uid: &str, node: Option<&str>, migration: serde_json::Value) -> VirtualMachineInstance {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": format!("vm-{uid}"), "namespace": "ns", "uid": uid},
        "spec": {"domain": {"devices": {}}},
        "status": {"nodeName": node, "migrationState": migration}
    }))
    .expect("vmi")
}

fn pod(labels: serde_json::Value, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "virt-launcher-x", "namespace": "ns", "labels": labels},
        "spec": {"nodeName": node, "containers": []}
    }))
    .expect("pod")
}

#[test]
fn only_old_entries_of_nothing_without_a_live_launcher_are_swept() {
    let entries = [
        entry("gone-old", 600),
        entry("gone-young", 5),
        entry("gone-at-grace", GRACE.as_secs()),
        entry("vmi-known", 600),
        entry("launcher-lives", 600),
    ];
    let wanted = keys(&["vmi-known"]);
    let live = keys(&["launcher-lives"]);
    let swept: Vec<&str> = orphans(&entries, &wanted, &live, GRACE)
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(swept, ["gone-old", "gone-at-grace"]);
    // Nothing known at all: still not the young one nor the live one.
    let swept = orphans(&entries, &HashSet::new(), &live, GRACE);
    assert_eq!(swept.len(), 3);
    assert!(
        swept
            .iter()
            .all(|e| e.key != "gone-young" && e.key != "launcher-lives")
    );
}

#[test]
fn a_vmi_or_launcher_pod_of_this_node_keeps_its_directories() {
    let active = HashMap::from([("moved".to_string(), "mig-done".to_string())]);
    // (uid, nodeName, migrationUid, targetNode)
    let vmis: Vec<VirtualMachineInstance> = [
        // Not placed yet (its pod may be starting here), placed here, moved here.
        ("pending", None, None, None),
        ("here", Some("n1"), Some("mig-running"), Some("n2")),
        ("moved", Some("n1"), Some("mig-done"), Some("n1")),
        // Placed on another node but migrating to this one: its target's directory is here.
        ("incoming", Some("n2"), Some("mig-in"), Some("n1")),
        // Another node's, not coming here.
        ("elsewhere", Some("n2"), Some("mig-other"), Some("n3")),
    ]
    .into_iter()
    .map(|(uid, node, id, target)| {
        vmi(uid, node, json!({"migrationUid": id, "targetNode": target}))
    })
    .collect();
    let pods = [
        // A migration's target pod, before the VMI's migration state names it.
        pod(
            json!({"kubevirt.io/created-by": "here", "kubevirt.io/migrationJobUID": "mig-new"}),
            Some("n1"),
        ),
        // A pod of a VMI that is gone, still there (deleted, or not collected yet).
        pod(json!({"kubevirt.io/created-by": "deleted-vmi"}), Some("n1")),
        // Pods of another node.
        pod(json!({"kubevirt.io/created-by": "far"}), Some("n2")),
        pod(
            json!({"kubevirt.io/created-by": "x", "kubevirt.io/migrationJobUID": "mig-far"}),
            Some("n2"),
        ),
    ];
    let wanted = wanted(&vmis, &pods, "n1", &active);
    for key in [
        "pending",
        "here",
        "mig-running",
        "moved",
        "mig-done",
        "incoming",
        "mig-in",
        "mig-new",
    ] {
        assert!(wanted.contains(key), "{key} is wanted: {wanted:?}");
    }
    for key in [
        "elsewhere",
        "mig-other",
        "mig-of-elsewhere",
        "mig-of-a-gone-vmi",
    ] {
        assert!(!wanted.contains(key), "{key} is not wanted here");
    }
}

#[test]
fn the_scan_sees_run_directories_and_pointers_and_a_held_lock_means_live() {
    let root = std::env::temp_dir().join(format!("kv-sweep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (a, b, c) = (
        "0f3c9a2e-1b7d-4c5e-8f90-123456789abc",
        "81b85204-5763-431b-9233-df0d434bf803",
        "9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a",
    );
    // Not uid-shaped: never looked at (the agent's own, or not the agent's at all).
    for d in [
        a,
        b,
        ".hidden",
        "active",
        "lost+found",
        "mig-7",
        "0F3C9A2E-1B7D-4C5E-8F90-12345678",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("dir");
    }
    std::fs::write(root.join("4a4a4a4a-1b7d-4c5e-8f90-123456789abc"), "").expect("file");
    std::fs::write(root.join("active").join(c), b).expect("pointer");
    std::fs::write(root.join("active").join(format!(".{c}.tmp")), b).expect("tmp");
    let (mut dirs, pointers, active) = scan(&root);
    dirs.sort_by(|x, y| x.key.cmp(&y.key));
    let names: Vec<&str> = dirs.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(names, [a, b]);
    assert!(dirs.iter().all(|d| d.age < GRACE), "just made: {dirs:?}");
    assert_eq!(
        pointers.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
        [c]
    );
    assert_eq!(active.get(c).map(String::as_str), Some(b));
    // A launcher holds a's lock while it lives; after it, a is not live.
    assert!(!locked(&root.join(a)));
    let held = kubevirt_launcher_protocol::hold(&root.join(a)).expect("hold");
    assert!(locked(&root.join(a)));
    drop(held);
    assert!(!locked(&root.join(a)));
    std::fs::remove_dir_all(&root).expect("clean");
}
