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
    for d in ["uid-a", "mig-b", ".hidden", "active"] {
        std::fs::create_dir_all(root.join(d)).expect("dir");
    }
    std::fs::write(root.join("not-a-dir"), "").expect("file");
    std::fs::write(root.join("active").join("uid-c"), "mig-b").expect("pointer");
    std::fs::write(root.join("active").join(".uid-c.tmp"), "mig-b").expect("tmp");
    let (mut dirs, pointers, active) = scan(&root);
    dirs.sort_by(|a, b| a.key.cmp(&b.key));
    let names: Vec<&str> = dirs.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(names, ["mig-b", "uid-a"]);
    assert!(dirs.iter().all(|d| d.age < GRACE), "just made: {dirs:?}");
    assert_eq!(
        pointers.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
        ["uid-c"]
    );
    assert_eq!(active.get("uid-c").map(String::as_str), Some("mig-b"));
    // A launcher holds uid-a's lock while it lives; after it, uid-a is not live.
    assert!(!locked(&root.join("uid-a")));
    let held = kubevirt_launcher_protocol::hold(&root.join("uid-a")).expect("hold");
    assert!(locked(&root.join("uid-a")));
    drop(held);
    assert!(!locked(&root.join("uid-a")));
    std::fs::remove_dir_all(&root).expect("clean");
}
