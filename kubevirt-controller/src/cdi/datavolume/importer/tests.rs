use serde_json::json;

use super::*;

fn dv(spec: serde_json::Value) -> DataVolume {
    serde_json::from_value(json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "root", "namespace": "ns", "uid": "dv-uid"},
        "spec": spec,
    }))
    .unwrap()
}

fn claim() -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": "root", "namespace": "ns"},
        "spec": {"resources": {"requests": {"storage": "1090Mi"}}},
    }))
    .unwrap()
}

fn env(pod: &Pod) -> BTreeMap<String, EnvVar> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.clone()))
        .collect()
}

fn value(pod: &Pod, name: &str) -> String {
    env(pod)[name].value.clone().unwrap_or_default()
}

#[test]
fn an_http_import_pod_carries_upstreams_environment() {
    let d = dv(json!({
        "source": {"http": {"url": "https://images.local/x.qcow2", "certConfigMap": "ca",
                            "secretRef": "creds", "extraHeaders": ["X-A: 1"],
                            "secretExtraHeaders": ["hdr"]}},
        "storage": {"resources": {"requests": {"storage": "1Gi"}}}
    }));
    let source = source_of(&d).unwrap();
    let p = pod_for(
        &d,
        &source,
        false,
        &claim(),
        &DataVolumeConfig::new("img:1"),
    );
    assert_eq!(p.metadata.name.as_deref(), Some("importer-root"));
    assert_eq!(value(&p, "IMPORTER_SOURCE"), "http");
    assert_eq!(
        value(&p, "IMPORTER_ENDPOINT"),
        "https://images.local/x.qcow2"
    );
    assert_eq!(value(&p, "IMPORTER_CONTENTTYPE"), "kubevirt");
    assert_eq!(value(&p, "IMPORTER_IMAGE_SIZE"), "1090Mi");
    assert_eq!(value(&p, "OWNER_UID"), "dv-uid");
    assert_eq!(value(&p, "FILESYSTEM_OVERHEAD"), "0.055");
    assert_eq!(value(&p, "IMPORTER_CERT_DIR"), CERT_DIR);
    assert_eq!(value(&p, "IMPORTER_EXTRA_HEADER_0"), "X-A: 1");
    let key = env(&p)["IMPORTER_ACCESS_KEY_ID"]
        .value_from
        .clone()
        .unwrap();
    assert_eq!(key.secret_key_ref.unwrap().key, "accessKeyId");
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("OnFailure"));
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("img:1"));
    let mounts: Vec<_> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, [DATA_DIR, CERT_DIR, "/extraheaders/0"]);
    let claim_vol = &spec.volumes.as_ref().unwrap()[0];
    assert_eq!(
        claim_vol
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "root"
    );
    assert_eq!(
        p.metadata.owner_references.as_ref().unwrap()[0].uid,
        "dv-uid"
    );
}

#[test]
fn block_claims_are_devices_and_blank_is_source_none() {
    let d = dv(json!({"source": {"blank": {}}, "contentType": "kubevirt",
        "storage": {"volumeMode": "Block", "resources": {"requests": {"storage": "1Gi"}}}}));
    let p = pod_for(
        &d,
        &Source::Blank,
        false,
        &claim(),
        &DataVolumeConfig::new("img:1"),
    );
    assert_eq!(value(&p, "IMPORTER_SOURCE"), "none");
    assert_eq!(value(&p, "FILESYSTEM_OVERHEAD"), "0");
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        c.volume_devices.as_ref().unwrap()[0].device_path,
        BLOCK_DEVICE
    );
    assert!(c.volume_mounts.is_none());
}

#[test]
fn unsupported_sources_are_named() {
    let e = |spec| source_of(&dv(spec)).unwrap_err();
    assert!(e(json!({"source": {"s3": {"url": "s3://b/k"}}})).contains("s3 is not supported"));
    assert!(
        e(json!({"source": {"pvc": {"name": "a", "namespace": "b"}}}))
            .starts_with("spec.source.pvc.namespace: cloning from another namespace (b)")
    );
    assert!(
        e(json!({"sourceRef": {"kind": "DataSource", "name": "fedora"}}))
            .contains("spec.sourceRef")
    );
    assert!(e(json!({})).contains("needs a source"));
}

#[test]
fn a_clone_mounts_its_source_read_only_and_reads_its_disk() {
    let d = dv(
        json!({"source": {"pvc": {"name": "golden", "namespace": "ns"}},
        "storage": {"resources": {"requests": {"storage": "1Gi"}}}}),
    );
    let source = source_of(&d).unwrap();
    assert_eq!(source.phases(), ("CloneScheduled", "CloneInProgress"));
    let cfg = DataVolumeConfig::new("img:1");
    let p = pod_for(&d, &source, false, &claim(), &cfg);
    assert_eq!(value(&p, "IMPORTER_SOURCE"), "file");
    assert_eq!(value(&p, "IMPORTER_ENDPOINT"), "/source/disk.img");
    let spec = p.spec.as_ref().unwrap();
    let src = &spec.volumes.as_ref().unwrap()[1];
    let pvc = src.persistent_volume_claim.as_ref().unwrap();
    assert_eq!(
        (pvc.claim_name.as_str(), pvc.read_only),
        ("golden", Some(true))
    );
    let p = pod_for(&d, &source, true, &claim(), &cfg);
    assert_eq!(value(&p, "IMPORTER_ENDPOINT"), CLONE_SOURCE_DEVICE);
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        c.volume_devices.as_ref().unwrap()[0].device_path,
        CLONE_SOURCE_DEVICE
    );
}

#[test]
fn an_upload_gets_the_upload_server_pod() {
    let d = dv(json!({"source": {"upload": {}},
        "storage": {"resources": {"requests": {"storage": "1Gi"}}}}));
    let source = source_of(&d).unwrap();
    assert_eq!(source, Source::Upload);
    assert_eq!(source.phases(), ("UploadScheduled", "UploadReady"));
    let p = pod_for(
        &d,
        &source,
        false,
        &claim(),
        &DataVolumeConfig::new("img:1"),
    );
    assert_eq!(p.metadata.name.as_deref(), Some("cdi-upload-root"));
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.command.as_ref().unwrap()[1], "cdi-uploadserver");
    assert_eq!(value(&p, "IMPORTER_SOURCE"), "none");
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8443);
}

#[test]
fn an_http_checksum_reaches_the_importer() {
    let d = dv(
        json!({"source": {"http": {"url": "http://x/d.img", "checksum": "sha256:00ff"}},
        "storage": {"resources": {"requests": {"storage": "1Gi"}}}}),
    );
    let p = pod_for(
        &d,
        &source_of(&d).unwrap(),
        false,
        &claim(),
        &DataVolumeConfig::new("i:1"),
    );
    assert_eq!(value(&p, "IMPORTER_CHECKSUM"), "sha256:00ff");
}

#[test]
fn a_pod_is_reachable_once_its_container_runs() {
    let pod = |state: serde_json::Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "cdi-upload-d"},
            "status": {"podIP": "10.0.0.5", "containerStatuses": [{"name": "uploader",
                "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": state}]}}))
        .unwrap()
    };
    assert_eq!(running_ip(&pod(json!({"running": {}}))), Some("10.0.0.5"));
    assert_eq!(
        running_ip(&pod(json!({"waiting": {"reason": "ContainerCreating"}}))),
        None
    );
    assert_eq!(socket_address("10.0.0.5", 8443), "10.0.0.5:8443");
    assert_eq!(socket_address("fd00::5", 8443), "[fd00::5]:8443");
}

#[test]
fn a_registry_import_pod_carries_upstreams_environment() {
    let d = dv(json!({
        "source": {"registry": {"url": "docker://10.0.0.5:5000/disks/demo:v1",
                                "certConfigMap": "reg-ca", "secretRef": "reg-creds"}},
        "storage": {"resources": {"requests": {"storage": "1Gi"}}}
    }));
    let source = source_of(&d).unwrap();
    let mut config = DataVolumeConfig::new("img:1");
    let p = pod_for(&d, &source, false, &claim(), &config);
    assert_eq!(value(&p, "IMPORTER_SOURCE"), "registry");
    assert_eq!(
        value(&p, "IMPORTER_ENDPOINT"),
        "docker://10.0.0.5:5000/disks/demo:v1"
    );
    assert_eq!(value(&p, "IMPORTER_CERT_DIR"), CERT_DIR);
    assert_eq!(value(&p, "INSECURE_TLS"), "false");
    let secret = env(&p)["IMPORTER_SECRET_KEY"].value_from.clone().unwrap();
    let key = secret.secret_key_ref.unwrap();
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("reg-creds", "secretKey")
    );
    // An insecure registry (CDIConfig's insecureRegistries) gets INSECURE_TLS.
    config.insecure_registries = vec!["10.0.0.5:5000".into()];
    let p = pod_for(&d, &source, false, &claim(), &config);
    assert_eq!(value(&p, "INSECURE_TLS"), "true");
}

#[test]
fn registry_sources_this_controller_cannot_import_are_refused_by_field() {
    let e = |registry: serde_json::Value| {
        source_of(&dv(json!({"source": {"registry": registry}}))).unwrap_err()
    };
    assert!(
        e(json!({"url": "docker://r/x:1", "pullMethod": "kubelet"}))
            .contains("is not one of pod, node")
    );
    assert!(e(json!({"imageStream": "fedora"})).starts_with("spec.source.registry.imageStream"));
    assert!(e(json!({})).starts_with("spec.source.registry.url: Required value"));
    assert!(e(json!({"url": "http://r/x"})).contains("must start with docker://"));
    assert!(
        e(json!({"url": "docker://r/X Y"}))
            .starts_with("spec.source.registry.url: image reference")
    );
    let ok = dv(
        json!({"source": {"registry": {"url": "docker://quay.io/containerdisks/fedora:41", "pullMethod": "pod"}}}),
    );
    assert!(matches!(source_of(&ok), Ok(Source::Registry(_))));
}

#[test]
fn a_node_pull_import_runs_the_users_image_beside_the_importer() {
    let d = dv(json!({
        "source": {"registry": {"url": "docker://10.0.0.5:5000/disks/demo:v1", "pullMethod": "node",
                                "certConfigMap": "ca", "secretRef": "reg-creds"}},
        "storage": {"resources": {"requests": {"storage": "1Gi"}}}
    }));
    let source = source_of(&d).unwrap();
    let mut config = DataVolumeConfig::new("importer:1");
    config.insecure_registries = vec!["10.0.0.5:5000".into()];
    let p = pod_for(&d, &source, false, &claim(), &config);
    let spec = p.spec.as_ref().unwrap();
    // The importer reads the server over plain HTTP once it is ready.
    assert_eq!(value(&p, "IMPORTER_SOURCE"), "http");
    assert_eq!(
        value(&p, "IMPORTER_ENDPOINT"),
        "http://localhost:8100/disk.img"
    );
    assert_eq!(value(&p, "IMPORTER_READY_FILE"), "/shared/ready");
    assert_eq!(value(&p, "IMPORTER_DONE_FILE"), "/shared/done");
    assert_eq!(value(&p, "INSECURE_TLS"), "false");
    let vars = env(&p);
    assert_eq!(vars.keys().filter(|k| *k == "IMPORTER_SOURCE").count(), 1);
    // The node pulls with its own credentials: the DataVolume's are not mounted.
    assert!(!vars.contains_key("IMPORTER_CERT_DIR"));
    assert!(!vars.contains_key("IMPORTER_SECRET_KEY"));
    let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["importer", "server"]);
    let server = &spec.containers[1];
    assert_eq!(server.image.as_deref(), Some("10.0.0.5:5000/disks/demo:v1"));
    let command = server.command.clone().unwrap();
    assert_eq!(
        command[..5],
        [
            "/shared/ld.so",
            "--library-path",
            "/shared",
            "/shared/server",
            "cdi-containerimage-server"
        ]
    );
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.image.as_deref(), Some("importer:1"));
    assert_eq!(
        init.command.clone().unwrap(),
        [
            IMPORTER_BINARY,
            "cdi-containerimage-server",
            "--install-to",
            "/shared"
        ]
    );
    for c in [&spec.containers[0], server, init] {
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "shared-volume" && m.mount_path == "/shared"),
            "{} mounts the shared volume",
            c.name
        );
    }
    let shared = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "shared-volume")
        .unwrap();
    assert!(shared.empty_dir.is_some());
    // pullMethod: pod keeps the one container.
    let pod_pull = dv(json!({"source": {"registry": {"url": "docker://r/x:1"}}}));
    let p = pod_for(
        &pod_pull,
        &source_of(&pod_pull).unwrap(),
        false,
        &claim(),
        &config,
    );
    assert_eq!(p.spec.as_ref().unwrap().containers.len(), 1);
    assert!(p.spec.as_ref().unwrap().init_containers.is_none());
}
