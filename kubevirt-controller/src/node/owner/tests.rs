use std::os::unix::fs::{MetadataExt, symlink};

use super::*;

fn vmi(volumes: &[&str]) -> VirtualMachineInstance {
    let volumes: Vec<serde_json::Value> = volumes
        .iter()
        .map(|v| serde_json::json!({"name": v, "persistentVolumeClaim": {"claimName": format!("pvc-{v}")}}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "v", "namespace": "ns", "uid": "u1"},
        "spec": {"domain": {"devices": {}}, "volumes": volumes}
    }))
    .unwrap()
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn the_ids_are_the_real_uid_and_gid_of_the_status() {
    let status = "Name:\tkubevirt-launch\nUid:\t107\t107\t107\t107\nGid:\t108\t108\t108\t108\n";
    assert_eq!(parse_ids(status), Some((107, 108)));
    assert_eq!(parse_ids("Name:\tx\n"), None);
    let (uid, gid) = launcher_ids(std::process::id()).unwrap();
    // SAFETY: getuid and getgid cannot fail.
    assert_eq!((uid, gid), unsafe { (libc::getuid(), libc::getgid()) });
}

#[test]
fn the_run_directory_is_made_and_given_to_the_launcher() {
    let tmp = kubevirt_testsupport::tempdir("owner-run");
    let dir = tmp.path().join("launchers").join("u1");
    prepare_run_dir(&dir).unwrap();
    assert_eq!(owner(&dir), (LAUNCHER_UID, LAUNCHER_UID));
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o750);
    // Again: nothing to do.
    prepare_run_dir(&dir).unwrap();
}

#[test]
fn the_image_cache_and_what_root_left_in_it_are_given_to_the_launcher_links_as_links() {
    let tmp = kubevirt_testsupport::tempdir("owner-cache");
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(cache.join("blobs/sha256")).unwrap();
    std::fs::write(cache.join("blobs/sha256/abc"), b"blob").unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"o").unwrap();
    symlink(&outside, cache.join("link")).unwrap();
    own_tree(&cache).unwrap();
    for p in ["", "blobs", "blobs/sha256", "blobs/sha256/abc", "link"] {
        assert_eq!(owner(&cache.join(p)), (107, 107), "{p}");
    }
    assert_eq!(owner(&outside), (0, 0));
}

/// A pod root with `/var/run` linking to `/run` (as many images have it: resolved inside the
/// pod's root) and three claims: a plain one with its disk, one whose `disk.img` is a symlink out
/// of the pod, and one that is itself an absolute symlink to a host directory.
#[test]
fn claims_are_given_to_the_launcher_inside_the_pods_root_and_never_a_host_file() {
    let tmp = kubevirt_testsupport::tempdir("owner-claims");
    let root = tmp.path().join("root");
    let volumes = root.join("run/kubevirt-rs/volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    std::fs::create_dir_all(root.join("var")).unwrap();
    symlink("/run", root.join("var/run")).unwrap();
    // Outside the pod: what a planted link names.
    let host = tmp.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let secret = host.join("secret");
    std::fs::write(&secret, b"s").unwrap();

    std::fs::create_dir(volumes.join("good")).unwrap();
    std::fs::write(volumes.join("good/disk.img"), b"disk").unwrap();
    std::fs::create_dir(volumes.join("planted")).unwrap();
    symlink(&secret, volumes.join("planted/disk.img")).unwrap();
    symlink(&host, volumes.join("away")).unwrap();

    own_claims_in(&root, &vmi(&["good", "missing"]), 107, 107).unwrap();
    assert_eq!(owner(&volumes.join("good")), (107, 107));
    assert_eq!(owner(&volumes.join("good/disk.img")), (107, 107));

    let e = own_claims_in(&root, &vmi(&["planted"]), 107, 107).unwrap_err();
    assert!(
        matches!(&e, OwnerError::NotPlain { path } if path.ends_with("planted/disk.img")),
        "{e}"
    );
    // A claim that is itself a link (to a host directory) is refused, never followed.
    let e = own_claims_in(&root, &vmi(&["away"]), 107, 107).unwrap_err();
    assert!(matches!(&e, OwnerError::NotPlain { .. }), "{e}");
    assert_eq!(owner(&secret), (0, 0));
    assert_eq!(owner(&host), (0, 0));
    // Root needs nothing.
    own_claims(&vmi(&["good"]), std::process::id(), 0, 0).unwrap();
}
