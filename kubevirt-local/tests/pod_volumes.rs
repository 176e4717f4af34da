//! PersistentVolumeClaims in pods on the local node, as docs/STORAGE.md has the kubelet use them:
//! the real `kubevirt-local up` (API server + kubelet + private containerd), the real kubectl,
//! real directories and a real loop device. The tests bind the claims themselves
//! (`spec.volumeName`, `status.phase: Bound`): the binder is not what is tested here. Also the
//! containers' termination messages (the CDI importer reports through them). Needs root and
//! the containerd, runc, CNI plugins and busybox-static packages, and util-linux's losetup.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::*;
use kubevirt_testsupport::tempdir;
use serde_json::Value;

/// The size of the loop device's backing file.
const BLOCK_BYTES: u64 = 64 << 20;

/// A loop device on a sparse file, detached on drop.
struct Loop {
    device: String,
}

impl Loop {
    fn attach(file: &Path) -> Loop {
        let f = std::fs::File::create(file).expect("backing file");
        f.set_len(BLOCK_BYTES).expect("sparse file");
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            device: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// `up` with a busybox image from the node's own registry; the image's name.
fn start(dir: &Path, node: &str) -> (Up, String) {
    let tools = ["sh", "cat", "echo", "test", "dd", "blockdev", "sleep"];
    let (up, _, image) = start_up_busybox(dir, node, &tools, &["--no-node"]);
    (up, image)
}

/// A local PV at `path` on `node` and a claim `claim` bound to it (both sides, as the binder
/// would); `mode` is `Filesystem` or `Block`.
fn bound_claim(up: &Up, pv: &str, claim: &str, path: &Path, node: &str, mode: &str) {
    let yaml = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {pv}
spec:
  capacity: {{storage: 64Mi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: manual
  volumeMode: {mode}
  claimRef: {{namespace: default, name: {claim}}}
  local: {{path: {path}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{node}]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {claim}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeMode: {mode}
  volumeName: {pv}
  resources: {{requests: {{storage: 64Mi}}}}
"#,
        path = path.display()
    );
    up.ok(&["apply", "-f", "-"], Some(&yaml));
    let bound = r#"{"status":{"phase":"Bound"}}"#;
    for (kind, name) in [("pv", pv), ("pvc", claim)] {
        up.ok(
            &[
                "patch",
                kind,
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                bound,
            ],
            None,
        );
    }
}

/// A pod running `script` once with `volumes` and the container's `extra` fields.
fn pod(name: &str, image: &str, script: &str, container_extra: &str, volumes: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: NODE
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["/bin/sh", "-c", {script:?}]
{container_extra}
  volumes:
{volumes}
"#
    )
}

fn finished(up: &Up, name: &str) -> Value {
    eventually(&format!("pod {name} finished"), 90, || {
        up.pod(name).filter(|p| {
            matches!(
                p["status"]["phase"].as_str(),
                Some("Succeeded") | Some("Failed")
            )
        })
    })
}

fn terminated(pod: &Value) -> Value {
    pod["status"]["containerStatuses"][0]["state"]["terminated"].clone()
}

#[test]
fn claims_are_mounted_read_write_read_only_and_as_block_devices() {
    require_node!();
    let _node = node_slot();
    let dir = tempdir("pod-volumes");
    let node = "kv-pod-volumes";
    // Declared before `up`: detached after the pods and containerd are gone.
    let block = Loop::attach(&dir.join("disk.img"));
    let (up, image) = start(&dir, node);

    // Filesystem: the directory, mode 0777 as the provisioner makes it.
    let fs_dir = dir.join("pv-fs");
    std::fs::create_dir(&fs_dir).unwrap();
    bound_claim(&up, "pv-fs", "data", &fs_dir, node, "Filesystem");
    let claim = |read_only: bool| {
        format!(
            "  - name: data\n    persistentVolumeClaim: {{claimName: data, readOnly: {read_only}}}"
        )
    };
    let mount = "    volumeMounts:\n    - {name: data, mountPath: /data}";
    up.run_pod(&pod(
        "writer",
        &image,
        "echo hello > /data/out && echo wrote > /dev/termination-log",
        mount,
        &claim(false),
    ));
    let writer = finished(&up, "writer");
    assert_eq!(writer["status"]["phase"], "Succeeded", "{writer}");
    assert_eq!(
        std::fs::read_to_string(fs_dir.join("out")).unwrap(),
        "hello\n"
    );
    // The termination message, from the file the container wrote.
    assert_eq!(terminated(&writer)["message"], "wrote\n", "{writer}");

    // readOnly on the claim: the data is there, writing fails.
    up.run_pod(&pod(
        "reader",
        &image,
        "cat /data/out > /dev/termination-log; echo x > /data/nope || exit 3",
        mount,
        &claim(true),
    ));
    let reader = finished(&up, "reader");
    assert_eq!(terminated(&reader)["exitCode"], 3, "{reader}");
    assert_eq!(terminated(&reader)["message"], "hello\n", "{reader}");
    assert!(!fs_dir.join("nope").exists());

    // FallbackToLogsOnError: a failed container that wrote no message gets its log's tail.
    up.run_pod(&pod(
        "fallback",
        &image,
        "echo first; echo last words; exit 1",
        "    terminationMessagePolicy: FallbackToLogsOnError",
        "  - {name: scratch, emptyDir: {}}",
    ));
    let fallback = finished(&up, "fallback");
    assert_eq!(
        terminated(&fallback)["message"],
        "first\nlast words\n",
        "{fallback}"
    );

    // Block: the PV's path is a symlink to the loop device (as the provisioner makes it); the
    // container sees the device at its devicePath, of the right size, and its writes reach the
    // backing file.
    let link: PathBuf = dir.join("pv-blk");
    std::os::unix::fs::symlink(&block.device, &link).unwrap();
    bound_claim(&up, "pv-blk", "disk", &link, node, "Block");
    up.run_pod(&pod(
        "blk",
        &image,
        "test -b /dev/xvda && blockdev --getsize64 /dev/xvda > /dev/termination-log \
         && echo -n kubevirt-rs-block | dd of=/dev/xvda conv=fsync",
        "    volumeDevices:\n    - {name: disk, devicePath: /dev/xvda}",
        "  - name: disk\n    persistentVolumeClaim: {claimName: disk}",
    ));
    let blk = finished(&up, "blk");
    assert_eq!(blk["status"]["phase"], "Succeeded", "{blk}");
    assert_eq!(
        terminated(&blk)["message"],
        format!("{BLOCK_BYTES}\n"),
        "{blk}"
    );
    let backing = std::fs::read(dir.join("disk.img")).unwrap();
    assert_eq!(&backing[..17], b"kubevirt-rs-block");
    // readOnly: the device can be read, not written (upstream's "r" device permission).
    up.run_pod(&pod(
        "blk-ro",
        &image,
        "dd if=/dev/xvda bs=17 count=1 > /dev/termination-log && \
         ! dd if=/dev/zero of=/dev/xvda bs=512 count=1 conv=fsync",
        "    volumeDevices:\n    - {name: disk, devicePath: /dev/xvda}",
        "  - name: disk\n    persistentVolumeClaim: {claimName: disk, readOnly: true}",
    ));
    let ro = finished(&up, "blk-ro");
    assert_eq!(ro["status"]["phase"], "Succeeded", "{ro}");
    assert_eq!(terminated(&ro)["message"], "kubevirt-rs-block", "{ro}");
    let backing = std::fs::read(dir.join("disk.img")).unwrap();
    assert_eq!(&backing[..17], b"kubevirt-rs-block");

    up.ok(
        &[
            "delete",
            "pod",
            "writer",
            "reader",
            "fallback",
            "blk",
            "blk-ro",
            "--wait=true",
        ],
        None,
    );
    assert_nothing_left(&dir.join("data"));
    assert_eq!(
        std::fs::read_to_string(fs_dir.join("out")).unwrap(),
        "hello\n",
        "the claim's data outlives the pods"
    );
    drop(up);
}

/// The `FailedMount` events recorded about pod `name`.
fn failed_mounts(up: &Up, name: &str) -> Vec<String> {
    let events: Value = serde_json::from_str(&up.ok(&["get", "events", "-o", "json"], None))
        .expect("events as JSON");
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == "FailedMount")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

fn failed_mount(up: &Up, name: &str, wanted: &str) -> String {
    eventually(&format!("a FailedMount event for {name}"), 60, || {
        failed_mounts(up, name)
            .into_iter()
            .find(|m| m.contains(wanted))
    })
}

#[test]
fn a_claim_that_cannot_be_used_keeps_the_pod_pending_with_failed_mount_events() {
    require_node!();
    let _node = node_slot();
    let dir = tempdir("pod-volumes-failing");
    let node = "kv-pod-volumes-failing";
    let (up, image) = start(&dir, node);
    let fs_dir = dir.join("pv");
    std::fs::create_dir(&fs_dir).unwrap();
    let mount = "    volumeMounts:\n    - {name: data, mountPath: /data}";
    let uses =
        |claim: &str| format!("  - name: data\n    persistentVolumeClaim: {{claimName: {claim}}}");

    // A claim that does not exist: the event names it; no sandbox, no container.
    up.run_pod(&pod(
        "lost",
        &image,
        "echo found > /data/late",
        mount,
        &uses("late"),
    ));
    let m = failed_mount(&up, "lost", "not found");
    assert_eq!(
        m,
        "Unable to attach or mount volumes: unmounted volumes=[data]: error processing PVC \
         default/late: persistentvolumeclaim \"late\" not found"
    );
    let lost = up.pod("lost").unwrap();
    assert_eq!(lost["status"]["phase"], "Pending", "{lost}");
    let cs = &lost["status"]["containerStatuses"][0];
    assert_eq!(
        cs["state"]["waiting"]["reason"], "ContainerCreating",
        "{lost}"
    );
    assert!(
        cs["containerID"].is_null() && lost["status"]["podIP"].is_null(),
        "{lost}"
    );
    assert!(
        leftovers(&dir.join("data"))
            .iter()
            .all(|l| !l.starts_with("container"))
    );

    // The claim is made but not bound: still waiting, saying so; once bound, the pod runs.
    let claim_only = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: late}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  resources: {requests: {storage: 64Mi}}
"#;
    up.ok(&["apply", "-f", "-"], Some(claim_only));
    failed_mount(&up, "lost", "the claim is not bound");
    // The pending pod uses the claim, so its protection finalizer holds it (as upstream's):
    // the test lets it go, standing in for an administrator replacing the claim.
    up.ok(&["delete", "pvc", "late", "--wait=false"], None);
    up.ok(
        &[
            "patch",
            "pvc",
            "late",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    eventually("the unbound claim gone", 30, || {
        (!up.kubectl(&["get", "pvc", "late"], None).status.success()).then_some(())
    });
    bound_claim(&up, "pv-late", "late", &fs_dir, node, "Filesystem");
    let lost = finished(&up, "lost");
    assert_eq!(lost["status"]["phase"], "Succeeded", "{lost}");
    assert_eq!(
        std::fs::read_to_string(fs_dir.join("late")).unwrap(),
        "found\n"
    );

    // A Filesystem claim listed in volumeDevices: upstream's message.
    up.run_pod(&pod(
        "misused",
        &image,
        "true",
        "    volumeDevices:\n    - {name: data, devicePath: /dev/xvda}",
        &uses("late"),
    ));
    failed_mount(
        &up,
        "misused",
        "volume \"data\" has volumeMode Filesystem, but is specified in volumeDevices",
    );

    // A volume on another node is refused.
    bound_claim(&up, "pv-far", "far", &fs_dir, "another-node", "Filesystem");
    up.run_pod(&pod("far", &image, "true", mount, &uses("far")));
    failed_mount(
        &up,
        "far",
        &format!("persistentvolume \"pv-far\" cannot be used on node \"{node}\""),
    );
    // A PV whose source this node does not mount: the event names it.
    let nfs = r#"apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-nfs}
spec:
  capacity: {storage: 64Mi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  claimRef: {namespace: default, name: remote}
  nfs: {server: 192.0.2.1, path: /export}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: remote}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  volumeName: pv-nfs
  resources: {requests: {storage: 64Mi}}
"#;
    up.ok(&["apply", "-f", "-"], Some(nfs));
    up.ok(
        &[
            "patch",
            "pvc",
            "remote",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Bound"}}"#,
        ],
        None,
    );
    up.run_pod(&pod("remote", &image, "true", mount, &uses("remote")));
    failed_mount(&up, "remote", "persistentvolume \"pv-nfs\" is a nfs volume");
    for name in ["misused", "far", "remote"] {
        assert_eq!(up.pod(name).unwrap()["status"]["phase"], "Pending");
    }

    up.ok(
        &[
            "delete",
            "pod",
            "lost",
            "misused",
            "far",
            "remote",
            "--wait=true",
        ],
        None,
    );
    assert_nothing_left(&dir.join("data"));
    drop(up);
}

#[test]
fn a_restarted_kubelet_still_reports_a_running_pod_whose_claim_went_away() {
    require_node!();
    let _node = node_slot();
    let dir = tempdir("pod-volumes-adopt");
    let node = "kv-pod-volumes-adopt";
    let (up, image) = start(&dir, node);
    let fs_dir = dir.join("pv");
    std::fs::create_dir(&fs_dir).unwrap();
    bound_claim(&up, "pv-held", "held", &fs_dir, node, "Filesystem");
    up.run_pod(&pod(
        "holder",
        &image,
        "exec sleep 100000",
        "    volumeMounts:\n    - {name: data, mountPath: /data}",
        "  - name: data\n    persistentVolumeClaim: {claimName: held}",
    ));
    let before = running_pod(&up, "holder");
    let id = before["status"]["containerStatuses"][0]["containerID"].clone();
    up.ok(&["delete", "pvc", "held", "--wait=false"], None);

    // A new kubelet cannot set the claim up again; the container it adopts still runs.
    let data = up.kill9();
    assert_eq!(data, dir.join("data"));
    let (up, _) = start(&dir, node);
    failed_mount(&up, "holder", "error processing PVC default/held");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = up.pod("holder").unwrap();
    let cs = &after["status"]["containerStatuses"][0];
    assert_eq!(after["status"]["phase"], "Running", "{after}");
    assert_eq!(cs["containerID"], id, "{after}");
    assert!(cs["state"]["running"].is_object(), "{after}");
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"]);

    up.ok(
        &["delete", "pod", "holder", "--grace-period=1", "--wait=true"],
        None,
    );
    assert_nothing_left(&dir.join("data"));
    drop(up);
}
