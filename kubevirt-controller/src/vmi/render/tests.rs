use serde_json::{Value, json};

use super::*;
use crate::storage::claim::VolumeMode;

fn config() -> PodConfig {
    PodConfig {
        launcher_image: "localhost:5000/kubevirt-rs/launcher:v1".into(),
        launcher_root: "/var/run/kubevirt-rs/launchers".into(),
        image_cache: "/var/cache/kubevirt-rs/images".into(),
        registry_config_dir: None,
        plain_http_registries: vec![],
        working_dir: "/home/me/demo".into(),
    }
}

fn vmi(spec: Value) -> VirtualMachineInstance {
    let mut spec = spec;
    if spec.get("domain").is_none() {
        spec["domain"] = json!({"memory": {"guest": "64Mi"}, "devices": {}});
    }
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "1234-uid",
                     "labels": {"app": "web", "kubevirt.io": "overridden"}},
        "spec": spec,
    }))
    .unwrap()
}

fn render(spec: Value) -> Value {
    serde_json::to_value(pod_for(&vmi(spec), &config(), &ClaimModes::new()).unwrap()).unwrap()
}

#[test]
fn metadata_names_the_vmi_the_upstream_way() {
    let p = render(json!({}));
    let m = &p["metadata"];
    assert_eq!(m["generateName"], "virt-launcher-demo-");
    assert_eq!(m["namespace"], "ns");
    assert_eq!(
        m["labels"],
        json!({"app": "web", "kubevirt.io": "virt-launcher", "kubevirt.io/created-by": "1234-uid",
               "kubevirt.io/domain": "demo", "vm.kubevirt.io/name": "demo"})
    );
    assert_eq!(
        m["annotations"],
        json!({"kubectl.kubernetes.io/default-container": "compute", "kubevirt.io/domain": "demo"})
    );
    assert_eq!(
        m["ownerReferences"],
        json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "demo",
                "uid": "1234-uid", "controller": true, "blockOwnerDeletion": true}])
    );
}

#[test]
fn scheduling_constraints_are_the_vmis() {
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}});
    let tolerations =
        json!([{"key": "dedicated", "operator": "Equal", "value": "vm", "effect": "NoSchedule"}]);
    let p = render(json!({
        "nodeSelector": {"disk": "ssd"}, "affinity": affinity, "tolerations": tolerations,
        "priorityClassName": "high", "schedulerName": "mine", "terminationGracePeriodSeconds": 5,
    }));
    let s = &p["spec"];
    assert_eq!(
        s["nodeSelector"],
        json!({"kubevirt.io/schedulable": "true", "disk": "ssd"})
    );
    assert_eq!(s["affinity"], affinity);
    assert_eq!(s["tolerations"], tolerations);
    assert_eq!(s["priorityClassName"], "high");
    assert_eq!(s["schedulerName"], "mine");
    assert_eq!(s["terminationGracePeriodSeconds"], 20);
    assert_eq!(s["restartPolicy"], "Never");
    assert_eq!(s["automountServiceAccountToken"], false);
    // The default grace period is 30 s.
    assert_eq!(
        render(json!({}))["spec"]["terminationGracePeriodSeconds"],
        45
    );
    assert_eq!(
        render(json!({}))["spec"]["nodeSelector"],
        json!({"kubevirt.io/schedulable": "true"})
    );
}

#[test]
fn the_compute_container_serves_the_vmi_from_the_shared_directories() {
    let mut c = config();
    c.registry_config_dir = Some("/data/node/containerd/certs.d".into());
    c.plain_http_registries = vec!["127.0.0.1:5000".into()];
    let p =
        serde_json::to_value(pod_for(&vmi(json!({})), &c, &ClaimModes::new()).unwrap()).unwrap();
    let compute = &p["spec"]["containers"][0];
    assert_eq!(compute["name"], "compute");
    assert_eq!(compute["image"], "localhost:5000/kubevirt-rs/launcher:v1");
    assert_eq!(compute["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        compute["command"],
        json!([
            "/usr/bin/kubevirt-launcher",
            "serve",
            "--namespace",
            "ns",
            "--name",
            "demo",
            "--uid",
            "1234-uid",
            "--run-dir",
            "/var/run/kubevirt-rs/vmi",
            "--cache-dir",
            "/var/cache/kubevirt-rs/images",
            "--registry-config-dir",
            "/etc/kubevirt-rs/certs.d",
            "--plain-http-registry",
            "127.0.0.1:5000"
        ])
    );
    assert_eq!(
        compute["volumeMounts"],
        json!([{"name": "launcher", "mountPath": "/var/run/kubevirt-rs/vmi"},
               {"name": "image-cache", "mountPath": "/var/cache/kubevirt-rs/images"},
               {"name": "registry-config", "mountPath": "/etc/kubevirt-rs/certs.d", "readOnly": true}])
    );
    // Upstream's non-root launcher.
    assert_eq!(
        compute["securityContext"],
        json!({"runAsUser": 107, "runAsGroup": 107, "runAsNonRoot": true, "privileged": false,
               "allowPrivilegeEscalation": false,
               "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}})
    );
    assert_eq!(
        p["spec"]["securityContext"],
        json!({"runAsUser": 107, "runAsGroup": 107, "runAsNonRoot": true})
    );
    assert_eq!(
        p["spec"]["volumes"],
        json!([
            {"name": "launcher", "hostPath": {"path": "/var/run/kubevirt-rs/launchers/1234-uid", "type": "DirectoryOrCreate"}},
            {"name": "image-cache", "hostPath": {"path": "/var/cache/kubevirt-rs/images", "type": "DirectoryOrCreate"}},
            {"name": "registry-config", "hostPath": {"path": "/data/node/containerd/certs.d", "type": "Directory"}},
        ])
    );
    let log = &p["spec"]["containers"][1];
    assert_eq!(log["name"], "guest-console-log");
    assert_eq!(
        log["command"],
        json!([
            "/usr/bin/kubevirt-launcher",
            "console-log",
            "--file",
            "/var/run/kubevirt-rs/vmi/console.log"
        ])
    );
    assert_eq!(
        log["volumeMounts"],
        json!([{"name": "launcher", "mountPath": "/var/run/kubevirt-rs/vmi", "readOnly": true}])
    );
    assert_eq!(
        log["resources"],
        json!({"requests": {"cpu": "5m", "memory": "20Mi"}, "limits": {"cpu": "15m", "memory": "60Mi"}})
    );
    assert_eq!(
        log["securityContext"],
        json!({"runAsUser": 107, "runAsGroup": 107, "runAsNonRoot": true, "privileged": false,
               "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );
}

#[test]
fn requests_are_guest_memory_plus_overhead_and_the_devices() {
    let p = render(json!({}));
    // 64 Mi guest + 24 + 2 + 1 (page tables, rounded up); no pod network: no tun.
    assert_eq!(
        p["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "100m", "memory": "91Mi", "devices.kubevirt.io/kvm": "1"},
               "limits": {"devices.kubevirt.io/kvm": "1"}})
    );
    let p = render(json!({
        "domain": {"cpu": {"cores": 2}, "memory": {"guest": "64Mi"},
                   "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "128Mi", "cpu": "2"}},
                   "devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
        "networks": [{"name": "default", "pod": {}}],
    }));
    // 24 + 2 × 2 + 1 (interface) + 1 (page tables) = 30 Mi of overhead.
    assert_eq!(
        p["spec"]["containers"][0]["resources"],
        json!({"requests": {"cpu": "1", "memory": "94Mi", "devices.kubevirt.io/kvm": "1", "devices.kubevirt.io/tun": "1"},
               "limits": {"cpu": "2", "memory": "158Mi", "devices.kubevirt.io/kvm": "1", "devices.kubevirt.io/tun": "1"}})
    );
}

#[test]
fn oci_layouts_are_mounted_read_only_at_their_absolute_path() {
    let p = render(json!({
        "domain": {"memory": {"guest": "64Mi"}, "devices": {},
                   "firmware": {"kernelBoot": {"container": {"image": "oci:target/demo-image:v1"}}}},
        "volumes": [{"name": "a", "containerDisk": {"image": "oci:/abs/disk"}},
                    {"name": "b", "containerDisk": {"image": "oci:/abs/disk:other"}},
                    {"name": "c", "containerDisk": {"image": "quay.io/x/y:1"}}],
    }));
    let volumes = p["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes[2..],
        [
            json!({"name": "oci-0", "hostPath": {"path": "/abs/disk", "type": "Directory"}}),
            json!({"name": "oci-1", "hostPath": {"path": "/home/me/demo/target/demo-image", "type": "Directory"}}),
        ]
    );
    let mounts = p["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap();
    assert_eq!(
        mounts[2..],
        [
            json!({"name": "oci-0", "mountPath": "/abs/disk", "readOnly": true}),
            json!({"name": "oci-1", "mountPath": "/home/me/demo/target/demo-image", "readOnly": true}),
        ]
    );
    // What the agent sends the launcher names the same absolute paths.
    let v = vmi(json!({
        "domain": {"memory": {"guest": "64Mi"}, "devices": {},
                   "firmware": {"kernelBoot": {"container": {"image": "oci:target/demo-image:v1"}}}},
        "volumes": [{"name": "a", "containerDisk": {"image": "oci:rel/disk"}}],
    }));
    let abs = with_absolute_oci(&v, Path::new("/w"));
    let image = |v: &VirtualMachineInstance| {
        let k = v
            .spec
            .domain
            .firmware
            .as_ref()
            .unwrap()
            .kernel_boot
            .as_ref()
            .unwrap();
        k.container.as_ref().unwrap().image.clone()
    };
    assert_eq!(image(&abs), "oci:/w/target/demo-image:v1");
    let disk = &abs.spec.volumes.as_ref().unwrap()[0];
    assert_eq!(
        disk.container_disk.as_ref().unwrap().image,
        "oci:/w/rel/disk"
    );
}

#[test]
fn a_vmi_without_uid_or_memory_is_refused_with_its_field() {
    let mut v = vmi(json!({}));
    v.metadata.uid = None;
    let e = pod_for(&v, &config(), &ClaimModes::new()).unwrap_err();
    assert_eq!(e, RenderError::NoUid);
    assert!(e.to_string().starts_with("metadata.uid: "), "{e}");
    let v = vmi(json!({"domain": {"devices": {}}}));
    let e = pod_for(&v, &config(), &ClaimModes::new())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("spec.domain.memory.guest: "), "{e}");
}

#[test]
fn claims_and_data_volumes_are_mounted_or_given_as_devices_by_their_mode() {
    let v = vmi(json!({"volumes": [
        {"name": "rootdisk", "persistentVolumeClaim": {"claimName": "root-claim"}},
        {"name": "data", "dataVolume": {"name": "imported"}},
        {"name": "ro", "persistentVolumeClaim": {"claimName": "shared", "readOnly": true}},
        {"name": "later", "persistentVolumeClaim": {"claimName": "hot", "hotpluggable": true}},
        {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config"}},
    ]}));
    let modes = ClaimModes::from([
        ("root-claim".to_string(), VolumeMode::Filesystem),
        ("imported".to_string(), VolumeMode::Block),
        ("shared".to_string(), VolumeMode::Filesystem),
    ]);
    let p = serde_json::to_value(pod_for(&v, &config(), &modes).unwrap()).unwrap();
    let volumes = p["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes[2..],
        [
            json!({"name": "rootdisk", "persistentVolumeClaim": {"claimName": "root-claim"}}),
            json!({"name": "data", "persistentVolumeClaim": {"claimName": "imported"}}),
            json!({"name": "ro", "persistentVolumeClaim": {"claimName": "shared", "readOnly": true}}),
        ]
    );
    let compute = &p["spec"]["containers"][0];
    assert_eq!(
        compute["volumeMounts"].as_array().unwrap()[2..],
        [
            json!({"name": "rootdisk", "mountPath": "/var/run/kubevirt-rs/volumes/rootdisk"}),
            json!({"name": "ro", "mountPath": "/var/run/kubevirt-rs/volumes/ro", "readOnly": true}),
        ]
    );
    assert_eq!(
        compute["volumeDevices"],
        json!([{"name": "data", "devicePath": "/var/run/kubevirt-rs/volumes/data"}])
    );
    // The console log container sees none of them.
    assert_eq!(
        p["spec"]["containers"][1]["volumeMounts"],
        json!([{"name": "launcher", "mountPath": "/var/run/kubevirt-rs/vmi", "readOnly": true}])
    );
    assert_eq!(
        claims::claim_volumes(&v)
            .iter()
            .map(|c| c.claim.as_str())
            .collect::<Vec<_>>(),
        ["root-claim", "imported", "shared"]
    );
    // Without claims there are no devices at all.
    assert!(
        render(json!({}))["spec"]["containers"][0]
            .get("volumeDevices")
            .is_none()
    );
}

#[test]
fn a_claim_volume_must_be_looked_up_and_not_take_the_pods_names() {
    let v = vmi(json!({"volumes": [
        {"name": "disk", "persistentVolumeClaim": {"claimName": "c"}}]}));
    assert_eq!(
        pod_for(&v, &config(), &ClaimModes::new())
            .unwrap_err()
            .to_string(),
        "spec.volumes[0].persistentVolumeClaim: the claim \"c\" was not looked up"
    );
    let v = vmi(json!({"volumes": [
        {"name": "launcher", "dataVolume": {"name": "c"}}]}));
    let modes = ClaimModes::from([("c".to_string(), VolumeMode::Block)]);
    assert_eq!(
        pod_for(&v, &config(), &modes).unwrap_err().to_string(),
        "spec.volumes[0].dataVolume: the volume name \"launcher\" is the launcher pod's own; rename the volume"
    );
}

#[test]
fn the_cluster_configuration_sizes_the_cpu_and_gates_host_disks() {
    let spec = json!({"volumes": [
        {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config"}},
        {"name": "host", "hostDisk": {"path": "/var/lib/d.img", "type": "Disk"}},
    ]});
    let cluster = crate::clusterconfig::ClusterConfig::from_spec(&json!({"configuration": {
        "developerConfiguration": {"cpuAllocationRatio": 4},
    }}));
    let e = pod_for_in(&vmi(spec.clone()), &config(), &ClaimModes::new(), &cluster).unwrap_err();
    assert_eq!(
        e.to_string(),
        "spec.volumes[1].hostDisk: HostDisk feature gate is not enabled"
    );
    let mut gated = cluster.clone();
    gated.feature_gates = Some(["HostDisk".to_string()].into());
    let pod = pod_for_in(&vmi(spec.clone()), &config(), &ClaimModes::new(), &gated).unwrap();
    let pod = serde_json::to_value(pod).unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        json!("250m")
    );
    // No KubeVirt CR: nothing gated, a tenth of a core.
    assert_eq!(
        render(spec)["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        json!("100m")
    );
}
