//! Aggregated discovery with the real kubectl 1.32 against a real `kubevirt-local apiserver`:
//! `kubectl api-resources` (fresh cache) asks `/api` and `/apis` only, with no request per
//! group/version, and lists exactly what the legacy per-group/version documents list; a kind
//! found that way works for `get`. (The aggregated APIService's group is checked in
//! `tests/aggregation.rs`.)

mod common;

use common::{Server, crds_file};
use serde_json::Value;
use std::collections::BTreeSet;

/// The request URLs kubectl's `-v=6` log shows (`GET https://host/path?query 200 OK`).
fn requested_paths(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("GET https://").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('/').map(|(_, path)| path))
        .map(|path| {
            let path = path.split_whitespace().next().unwrap_or_default();
            format!("/{}", path.split('?').next().unwrap_or_default())
        })
        .collect()
}

#[test]
fn kubectl_discovers_everything_in_two_requests() {
    let s = Server::start("aggregated-discovery");
    s.ok(&["apply", "-f", crds_file(&s.dir).to_str().unwrap()]);
    let cache = s.dir.join("fresh-cache");
    let cache_arg = cache.to_str().unwrap();
    let out = s.kubectl(&[
        "api-resources",
        "-o",
        "name",
        "-v=6",
        "--cache-dir",
        cache_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let paths = requested_paths(&log);
    assert!(paths.contains(&"/api".to_string()), "{log}");
    assert!(paths.contains(&"/apis".to_string()), "{log}");
    let per_group: Vec<&String> = paths
        .iter()
        .filter(|p| p.starts_with("/apis/") || p.starts_with("/api/"))
        .collect();
    assert!(
        per_group.is_empty(),
        "per-group discovery: {per_group:?}\n{log}"
    );

    // The same resources as the legacy documents of each group's preferred version.
    let listed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let raw =
        |path: &str| -> Value { serde_json::from_str(&s.ok(&["get", "--raw", path])).unwrap() };
    let mut legacy = BTreeSet::new();
    let mut add = |list: Value, group: &str| {
        for r in list["resources"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            if !name.contains('/') {
                legacy.insert(if group.is_empty() {
                    name.to_string()
                } else {
                    format!("{name}.{group}")
                });
            }
        }
    };
    add(raw("/api/v1"), "");
    for g in raw("/apis")["groups"].as_array().unwrap() {
        let group = g["name"].as_str().unwrap();
        let gv = g["preferredVersion"]["groupVersion"].as_str().unwrap();
        add(raw(&format!("/apis/{gv}")), group);
    }
    assert_eq!(listed, legacy);
    assert!(listed.contains("virtualmachines.kubevirt.io"), "{listed:?}");
    assert!(listed.contains("pods"), "{listed:?}");
    assert!(
        listed.contains("selfsubjectreviews.authentication.k8s.io"),
        "{listed:?}"
    );

    // Short names and the kinds' scope came through: `get vm` and a cluster-scoped kind.
    let out = s.kubectl(&["get", "vm", "-A", "--cache-dir", cache_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wide = s.ok(&["api-resources", "--cache-dir", cache_arg]);
    let vm = wide
        .lines()
        .find(|l| l.starts_with("virtualmachines "))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        vm,
        [
            "virtualmachines",
            "vm,vms",
            "kubevirt.io/v1",
            "true",
            "VirtualMachine"
        ]
    );
}
