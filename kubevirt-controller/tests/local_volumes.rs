//! The local-volume provisioner against a real API server (kubevirt-local in process) with real
//! directories and real loop devices. The test plays the binder and the scheduler: it puts
//! `volume.kubernetes.io/storage-provisioner` and `volume.kubernetes.io/selected-node` on its
//! claims, binds, and marks PVs Released.
//!
//! Loop devices are few (8 by default): a guard detaches every device of the test's root when
//! the test ends, passing or not.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubevirt_controller::controllers::Controllers;
use kubevirt_controller::storage::{self, ProvisionerConfig, loopdev};
use serde_json::json;

const NODE: &str = "node-a";

/// The storage root; dropping it detaches its loop devices and removes it.
struct Root(#[allow(dead_code)] kubevirt_testsupport::TestDir, PathBuf);

impl Root {
    fn new() -> Root {
        let dir = kubevirt_testsupport::tempdir("local-volumes");
        let root = std::fs::canonicalize(dir.path()).unwrap().join("volumes");
        Root(dir, root)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Err(e) = storage::detach_all(&self.1) {
            eprintln!("detaching the test's loop devices: {e}");
        }
    }
}

/// kubevirt-local serves StorageClasses once the binder's work lands; until then the test
/// serves them as a CustomResourceDefinition of the same group, version and kind.
async fn serve_storage_classes(client: &Client) {
    let classes: Api<StorageClass> = Api::all(client.clone());
    if classes.list(&ListParams::default()).await.is_ok() {
        return;
    }
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "storageclasses.storage.k8s.io"},
        "spec": {"group": "storage.k8s.io", "scope": "Cluster",
            "names": {"plural": "storageclasses", "singular": "storageclass",
                      "kind": "StorageClass", "listKind": "StorageClassList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    eventually("StorageClasses served", || async {
        classes.list(&ListParams::default()).await.ok()
    })
    .await;
}

fn class(name: &str, reclaim: &str) -> StorageClass {
    serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": storage::PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": reclaim,
        "allowVolumeExpansion": true,
    }))
    .unwrap()
}

/// A claim handed to our provisioner and placed on `NODE`, as the binder and scheduler do.
fn claim(name: &str, class: &str, mode: &str, size: &str, access: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default", "annotations": {
            "volume.kubernetes.io/storage-provisioner": storage::PROVISIONER,
            "volume.kubernetes.io/selected-node": NODE}},
        "spec": {"storageClassName": class, "volumeMode": mode, "accessModes": [access],
                 "resources": {"requests": {"storage": size}}}
    }))
    .unwrap()
}

fn start(client: &Client, root: &Path) -> Controllers {
    let mut set = Controllers::new(client.clone(), |what, r| {
        if let Err(e) = r {
            eprintln!("{what}: {e}");
        }
    });
    set.start_local_provisioner(ProvisionerConfig {
        node_name: NODE.into(),
        root: root.to_path_buf(),
        immediate: false,
    });
    set
}

async fn create_claim(claims: &Api<PersistentVolumeClaim>, c: PersistentVolumeClaim) -> String {
    let made = claims.create(&PostParams::default(), &c).await.unwrap();
    format!("pvc-{}", made.metadata.uid.unwrap())
}

async fn pv_named(pvs: &Api<PersistentVolume>, name: &str) -> PersistentVolume {
    eventually(&format!("the PV {name}"), || async {
        pvs.get_opt(name).await.unwrap()
    })
    .await
}

/// What the binder does once the PV exists: both sides Bound.
async fn bind(
    claims: &Api<PersistentVolumeClaim>,
    pvs: &Api<PersistentVolume>,
    claim: &str,
    pv: &str,
    size: &str,
) {
    let spec = json!({"spec": {"volumeName": pv}});
    claims
        .patch(claim, &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    let status = json!({"status": {"phase": "Bound", "capacity": {"storage": size}}});
    claims
        .patch_status(claim, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    set_phase(pvs, pv, "Bound").await;
}

async fn set_phase(pvs: &Api<PersistentVolume>, pv: &str, phase: &str) {
    let status = json!({"status": {"phase": phase}});
    pvs.patch_status(pv, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// The loop device `<root>/<name>` links to, with its size in bytes.
fn linked_device(root: &Path, name: &str) -> Option<(PathBuf, u64)> {
    let device = std::fs::read_link(root.join(name)).ok()?;
    let attached = loopdev::backing(&root.join(format!("{name}.img"))).ok()?;
    if !attached.contains(&device) {
        return None;
    }
    Some((device.clone(), loopdev::size(&device).ok()?))
}

async fn event_note(events: &Api<Event>, claim: &str, reason: &str) -> String {
    eventually(&format!("a {reason} event on {claim}"), || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim)
                    && e.reason.as_deref() == Some(reason)
            })
            .and_then(|e| e.note)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_get_local_volumes_that_grow_survive_restarts_and_go() {
    let c = Cluster::start(false).await;
    let root = Root::new();
    serve_storage_classes(&c.client).await;
    let classes: Api<StorageClass> = Api::all(c.client.clone());
    for k in [class("local", "Delete"), class("keep", "Retain")] {
        classes.create(&PostParams::default(), &k).await.unwrap();
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let set = start(&c.client, &root.1);

    // Filesystem: a world-writable directory and the contract's PV.
    let fs_pv = create_claim(
        &claims,
        claim("fs", "local", "Filesystem", "64Mi", "ReadWriteOnce"),
    )
    .await;
    let pv = pv_named(&pvs, &fs_pv).await;
    let spec = pv.spec.clone().unwrap();
    let dir = root.1.join(&fs_pv);
    assert_eq!(spec.local.unwrap().path, dir.to_string_lossy());
    assert_eq!(spec.capacity.unwrap()["storage"].0, "64Mi");
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.claim_ref.unwrap().name.as_deref(), Some("fs"));
    assert_eq!(
        pv.metadata.annotations.unwrap()["pv.kubernetes.io/provisioned-by"],
        storage::PROVISIONER
    );
    let affinity = serde_json::to_value(spec.node_affinity).unwrap();
    assert_eq!(
        affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]})
    );
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o777);
    let note = event_note(&events, "fs", "ProvisioningSucceeded").await;
    assert!(note.contains(&fs_pv), "{note}");

    // Block: a sparse file on a loop device of the claim's size, linked.
    let blk_pv = create_claim(
        &claims,
        claim("blk", "local", "Block", "64Mi", "ReadWriteOnce"),
    )
    .await;
    let pv = pv_named(&pvs, &blk_pv).await;
    assert_eq!(pv.spec.unwrap().volume_mode.as_deref(), Some("Block"));
    let (device, size) = linked_device(&root.1, &blk_pv).expect("a linked loop device");
    assert_eq!(size, 64 << 20);
    assert!(device.to_string_lossy().starts_with("/dev/loop"));

    // Bad claims get a reason naming the field (or both sizes), and nothing.
    claims
        .create(
            &PostParams::default(),
            &claim("rwx", "local", "Filesystem", "1Gi", "ReadWriteMany"),
        )
        .await
        .unwrap();
    claims
        .create(
            &PostParams::default(),
            &claim("huge", "local", "Block", "900Ti", "ReadWriteOnce"),
        )
        .await
        .unwrap();
    let note = event_note(&events, "rwx", "ProvisioningFailed").await;
    assert!(
        note.starts_with("spec.accessModes: ReadWriteMany"),
        "{note}"
    );
    let note = event_note(&events, "huge", "ProvisioningFailed").await;
    assert!(
        note.contains("900Ti (900Ti) is more than the") && note.contains("free in"),
        "{note}"
    );

    // Grown: the file, the device, the PV and the claim's status.
    bind(&claims, &pvs, "blk", &blk_pv, "64Mi").await;
    let grow = json!({"spec": {"resources": {"requests": {"storage": "96Mi"}}}});
    claims
        .patch("blk", &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .unwrap();
    eventually("the claim's capacity grown", || async {
        let c = claims.get("blk").await.ok()?;
        (c.status?.capacity?["storage"].0 == "96Mi").then_some(())
    })
    .await;
    assert_eq!(linked_device(&root.1, &blk_pv).unwrap().1, 96 << 20);
    let pv = pvs.get(&blk_pv).await.unwrap();
    assert_eq!(pv.spec.unwrap().capacity.unwrap()["storage"].0, "96Mi");

    // Restarted after a "reboot" (the device gone): the volume is attached again and linked.
    set.stop().await;
    loopdev::detach(&device).unwrap();
    let set = start(&c.client, &root.1);
    let (_, size) = eventually("the volume re-attached", || async {
        linked_device(&root.1, &blk_pv)
    })
    .await;
    assert_eq!(size, 96 << 20);

    // A claim and its PV deleted by hand (no Released, no reclaim): the device goes, the data
    // stays (it could be a Retain volume's).
    let hand_pv = create_claim(
        &claims,
        claim("hand", "local", "Block", "4Mi", "ReadWriteOnce"),
    )
    .await;
    pv_named(&pvs, &hand_pv).await;
    assert!(linked_device(&root.1, &hand_pv).is_some());
    claims
        .delete("hand", &DeleteParams::default())
        .await
        .unwrap();
    pvs.delete(&hand_pv, &DeleteParams::default())
        .await
        .unwrap();
    // No protection controllers run here: their finalizers go as they would once nothing uses
    // the claim and the volume.
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let params = PatchParams::default();
    let _ = claims.patch("hand", &params, &no_finalizers).await;
    let _ = pvs.patch(&hand_pv, &params, &no_finalizers).await;
    let hand_image = root.1.join(format!("{hand_pv}.img"));
    eventually("the deleted PV's device detached", || async {
        loopdev::backing(&hand_image)
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(hand_image.is_file());

    // Released with Retain: kept. Released with Delete: data, device and PV gone. (The Retain
    // one is released first, so the pass that removes the others has seen it too.)
    let keep_pv = create_claim(
        &claims,
        claim("kept", "keep", "Filesystem", "8Mi", "ReadOnlyMany"),
    )
    .await;
    pv_named(&pvs, &keep_pv).await;
    set_phase(&pvs, &keep_pv, "Released").await;
    set_phase(&pvs, &fs_pv, "Released").await;
    set_phase(&pvs, &blk_pv, "Released").await;
    // Deleted: gone, or only held by pv-protection's finalizer (its controller, which drops it
    // from a volume that is not Bound, does not run here).
    let deleted = |pv: Option<k8s_openapi::api::core::v1::PersistentVolume>| {
        pv.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    };
    eventually("the Delete volumes gone", || async {
        let gone = deleted(pvs.get_opt(&fs_pv).await.unwrap())
            && deleted(pvs.get_opt(&blk_pv).await.unwrap());
        gone.then_some(())
    })
    .await;
    assert!(!dir.exists());
    assert!(!root.1.join(&blk_pv).exists());
    assert!(!root.1.join(format!("{blk_pv}.img")).exists());
    let image = root.1.join(format!("{blk_pv}.img"));
    let left: Vec<_> = loopdev::list()
        .unwrap()
        .into_iter()
        .filter(|l| l.backing == image)
        .collect();
    assert_eq!(left, vec![], "a loop device left for the deleted volume");
    assert!(pvs.get_opt(&keep_pv).await.unwrap().is_some());
    assert!(root.1.join(&keep_pv).is_dir());

    set.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_provisions_for_its_node_until_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let c = Cluster::start(true).await;
    let root = Root::new();
    serve_storage_classes(&c.client).await;
    let mut immediate = class("now", "Delete");
    immediate.volume_binding_mode = Some("Immediate".into());
    for k in [class("local", "Delete"), immediate] {
        Api::<StorageClass>::all(c.client.clone())
            .create(&PostParams::default(), &k)
            .await
            .unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .args(["provisioner", "--immediate", "--node", NODE, "--kubeconfig"])
        .arg(&c.kubeconfig)
        .arg("--root")
        .arg(&root.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-controller provisioner");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.contains("kubevirt-rs.io/local-volume of node node-a")
            && first.contains("Immediate classes too"),
        "{first}"
    );

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    let other = claim("elsewhere", "local", "Filesystem", "1Mi", "ReadWriteOnce");
    let mut other_json = serde_json::to_value(&other).unwrap();
    other_json["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] = json!("node-b");
    let other_pv = create_claim(&claims, serde_json::from_value(other_json).unwrap()).await;
    let name = create_claim(
        &claims,
        claim("mine", "local", "Filesystem", "1Mi", "ReadWriteOnce"),
    )
    .await;
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    pv_named(&pvs, &name).await;
    assert!(root.1.join(&name).is_dir());
    // With --immediate, a claim of an Immediate class names no node and is this instance's.
    let mut floating = claim("floating", "now", "Filesystem", "1Mi", "ReadWriteOnce");
    floating
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove("volume.kubernetes.io/selected-node");
    let floating_pv = create_claim(&claims, floating).await;
    pv_named(&pvs, &floating_pv).await;
    // Another node's claim is that node's provisioner's (its PV would have been made in a pass
    // before the last one).
    assert!(pvs.get_opt(&other_pv).await.unwrap().is_none());
    assert!(!root.1.join(&other_pv).exists());

    // SAFETY: kill(2) on the child this test spawned and has not reaped; no memory is involved.
    let r = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(r, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}
