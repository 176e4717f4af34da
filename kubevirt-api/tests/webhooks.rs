//! Defaulting and validation behave like upstream's webhooks: every upstream example passes them,
//! defaulting is idempotent and keeps documents decodable, and broken documents are refused with the
//! field path and a message a user can act on.

mod common;

use kubevirt_api::codec::documents_from_yaml;
use kubevirt_api::defaults::{ClusterDefaults, apply};
use kubevirt_api::object::Object;
use kubevirt_api::validation::{ErrorKind, validate, validate_update};

#[test]
fn upstream_examples_pass_defaulting_and_validation() {
    let cluster = ClusterDefaults::default();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (file, docs) in common::fixture_documents() {
        for doc in docs {
            let Ok(mut obj) = Object::decode(&doc.value) else {
                continue;
            };
            apply(&mut obj, &cluster);
            let once = obj.clone();
            apply(&mut obj, &cluster);
            assert_eq!(obj, once, "{file}: defaulting is not idempotent");
            // The defaulted object is still a valid document of its kind.
            Object::decode(&obj.encode().expect("encode"))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            // The apitesting fixtures are fuzz-filled (e.g. cores = 4294967291 but nonsense names);
            // only real examples must validate cleanly.
            if file.starts_with("kubevirt-apitesting") {
                continue;
            }
            for e in validate(&obj) {
                failures.push(format!("{file}[{}] {}: {e}", doc.index, obj.kind()));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "upstream examples rejected:\n{}",
        failures.join("\n")
    );
    assert!(checked > 200, "only {checked} documents checked");
}

fn check(yaml: &str) -> Vec<(String, ErrorKind)> {
    let doc = documents_from_yaml(yaml).expect("yaml").remove(0);
    let mut obj = Object::decode(&doc.value).expect("decode");
    apply(&mut obj, &ClusterDefaults::default());
    validate(&obj)
        .into_iter()
        .map(|e| (e.path.to_string(), e.kind))
        .collect()
}

const VM: &str = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: vm, namespace: default}
spec:
  running: true
  runStrategy: Always
  template:
    spec:
      domain:
        memory: {guest: 128Mi}
        devices:
          disks:
          - {name: root, disk: {bus: virtio}, bootOrder: 1}
          - {name: root, cdrom: {bus: virtio}}
          - {name: data, disk: {bus: ide}}
          interfaces:
          - {name: default, masquerade: {}, bootOrder: 1, macAddress: "zz:00:00:00:00:00"}
      networks:
      - {name: default, pod: {}}
      volumes:
      - {name: root, containerDisk: {image: quay.io/containerdisks/fedora}}
"#;

#[test]
fn broken_vm_reports_every_problem_with_its_path() {
    let errs = check(VM);
    let disks = "spec.template.spec.domain.devices.disks";
    let expected = [
        ("spec.running".to_string(), ErrorKind::Forbidden),
        (format!("{disks}[1].name"), ErrorKind::Duplicate),
        (format!("{disks}[1].cdrom.bus"), ErrorKind::NotSupported),
        (format!("{disks}[2].name"), ErrorKind::NotFound),
        (format!("{disks}[2].disk.bus"), ErrorKind::NotSupported),
        (
            "spec.template.spec.domain.devices.interfaces[0].macAddress".to_string(),
            ErrorKind::Invalid,
        ),
        (
            "spec.template.spec.domain.devices.interfaces[0].bootOrder".to_string(),
            ErrorKind::Duplicate,
        ),
    ];
    for e in &expected {
        assert!(errs.contains(e), "missing {e:?} in {errs:?}");
    }
    assert_eq!(
        errs.len(),
        expected.len(),
        "unexpected extra errors: {errs:?}"
    );
}

#[test]
fn vmi_must_request_memory() {
    let errs = check(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: v}\nspec:\n  domain:\n    devices: {}\n",
    );
    assert_eq!(
        errs,
        [("spec.domain.memory.guest".to_string(), ErrorKind::Required)]
    );
}

#[test]
fn replicaset_selector_must_match_template_labels() {
    let errs = check(
        r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstanceReplicaSet
metadata: {name: rs}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: db}}
    spec: {domain: {devices: {}, memory: {guest: 64Mi}}}
"#,
    );
    assert_eq!(errs, [("spec.selector".to_string(), ErrorKind::Invalid)]);
}

#[test]
fn datavolume_needs_exactly_one_source() {
    let both = check(
        r#"
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: dv}
spec:
  source: {blank: {}}
  sourceRef: {kind: DataSource, name: fedora}
  storage: {resources: {requests: {storage: 1Gi}}}
"#,
    );
    assert_eq!(both, [("spec.sourceRef".to_string(), ErrorKind::Forbidden)]);
    let none = check(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: dv}\nspec:\n  storage: {resources: {requests: {storage: 1Gi}}}\n",
    );
    assert_eq!(none, [("spec.source".to_string(), ErrorKind::Required)]);
}

#[test]
fn snapshot_source_must_be_a_vm_and_its_spec_is_immutable() {
    let snap = |name: &str| {
        format!(
            "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata: {{name: s}}\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {name}}}\n"
        )
    };
    assert!(check(&snap("vm1")).is_empty());
    let pod = snap("vm1").replace("kind: VirtualMachine,", "kind: Pod,");
    assert_eq!(
        check(&pod),
        [("spec.source.kind".to_string(), ErrorKind::NotSupported)]
    );
    let decode = |y: &str| Object::decode(&documents_from_yaml(y).unwrap()[0].value).unwrap();
    let errs = validate_update(&decode(&snap("vm1")), &decode(&snap("vm2")));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path.to_string(), "spec");
}

#[test]
fn defaults_fill_what_upstream_fills() {
    let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: v, namespace: ns}\nspec:\n  domain:\n    resources: {requests: {memory: 64Mi}}\n    devices:\n      disks: [{name: d}, {name: c, cdrom: {}}]\n  volumes: [{name: d, emptyDisk: {capacity: 1Gi}}, {name: c, emptyDisk: {capacity: 1Gi}}]\n";
    let mut obj = Object::decode(&documents_from_yaml(yaml).unwrap()[0].value).unwrap();
    apply(&mut obj, &ClusterDefaults::default());
    let v = obj.encode().unwrap();
    let spec = &v["spec"];
    assert_eq!(spec["domain"]["memory"]["guest"], "64Mi");
    assert_eq!(spec["domain"]["machine"]["type"], "q35");
    assert_eq!(spec["domain"]["cpu"]["sockets"], 1);
    assert_eq!(
        spec["domain"]["devices"]["disks"][0]["disk"]["bus"],
        "virtio"
    );
    assert_eq!(
        spec["domain"]["devices"]["disks"][1]["cdrom"]["bus"],
        "sata"
    );
    assert_eq!(
        spec["domain"]["devices"]["disks"][1]["cdrom"]["readonly"],
        true
    );
    assert_eq!(spec["networks"][0]["name"], "default");
    let mut volume_only = Object::decode(
        &documents_from_yaml(&yaml.replace(
            "disks: [{name: d}, {name: c, cdrom: {}}]",
            "disks: [{name: c, cdrom: {}}]",
        ))
        .unwrap()[0]
            .value,
    )
    .unwrap();
    apply(&mut volume_only, &ClusterDefaults::default());
    let disks = volume_only.encode().unwrap()["spec"]["domain"]["devices"]["disks"].clone();
    assert_eq!(
        disks[1]["name"], "d",
        "a volume without a disk gets one, as upstream's SetDefaultVolumeDisk does"
    );
    assert_eq!(disks[1]["disk"]["bus"], "virtio");
    assert!(spec["domain"]["devices"]["interfaces"][0]["bridge"].is_object());
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    let uuid = spec["domain"]["firmware"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    // Deterministic: the same object gets the same UUID.
    let mut again = Object::decode(&documents_from_yaml(yaml).unwrap()[0].value).unwrap();
    apply(&mut again, &ClusterDefaults::default());
    assert_eq!(
        again.encode().unwrap()["spec"]["domain"]["firmware"]["uuid"],
        uuid.as_str()
    );
}
