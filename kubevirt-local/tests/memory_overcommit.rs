//! The KubeVirt CR's `developerConfiguration.memoryOvercommit` in VMI admission, with the real
//! kubectl against a real `kubevirt-local apiserver` (issue 18): without a CR a VMI with 96Mi of
//! guest memory requests 96Mi; with the CR at 150 % it requests 64Mi (guest × 100 / 150, as
//! upstream's VMI mutator); a request the VMI names is kept; a CR's edit applies to the next VMI.

mod common;

use common::{Server, crds_file};

fn vmi(name: &str, request: Option<&str>) -> String {
    let resources = request
        .map(|r| format!("\n    resources:\n      requests:\n        memory: {r}"))
        .unwrap_or_default();
    format!(
        "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: {name}
spec:
  domain:
    memory:
      guest: 96Mi{resources}
    devices: {{}}
"
    )
}

fn kubevirt(overcommit: u32) -> String {
    format!(
        "apiVersion: kubevirt.io/v1
kind: KubeVirt
metadata:
  name: kubevirt
  namespace: kubevirt
spec:
  configuration:
    developerConfiguration:
      memoryOvercommit: {overcommit}
"
    )
}

/// Create `yaml` with kubectl; the stored `requests.memory` and `memory.guest`.
fn create(s: &Server, yaml: &str) -> (String, String) {
    let out = s.kubectl_stdin(
        &[
            "create",
            "-f",
            "-",
            "-o",
            "jsonpath={.spec.domain.resources.requests.memory} {.spec.domain.memory.guest}",
        ],
        Some(yaml),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (req, guest) = text.split_once(' ').expect("two fields");
    (req.to_string(), guest.to_string())
}

#[test]
fn memory_overcommit_of_the_kubevirt_cr_sizes_the_default_request() {
    let s = Server::start("overcommit");
    s.ok(&["apply", "-f", crds_file(&s.dir).to_str().unwrap()]);
    assert_eq!(
        create(&s, &vmi("before", None)),
        ("96Mi".into(), "96Mi".into())
    );

    s.ok(&["create", "namespace", "kubevirt"]);
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(&kubevirt(150)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        create(&s, &vmi("overcommitted", None)),
        ("64Mi".into(), "96Mi".into())
    );
    assert_eq!(
        create(&s, &vmi("explicit", Some("90Mi"))),
        ("90Mi".into(), "96Mi".into()),
        "a request the VMI names is its own"
    );
    // Admission reads the CR as it is now; VMIs already stored keep their requests.
    s.ok(&[
        "-n",
        "kubevirt",
        "patch",
        "kubevirt",
        "kubevirt",
        "--type=merge",
        "-p",
        r#"{"spec":{"configuration":{"developerConfiguration":{"memoryOvercommit":200}}}}"#,
    ]);
    assert_eq!(create(&s, &vmi("after-edit", None)).0, "48Mi");
    let kept = s.ok(&[
        "get",
        "vmi",
        "overcommitted",
        "-o",
        "jsonpath={.spec.domain.resources.requests.memory}",
    ]);
    assert_eq!(kept, "64Mi");
    // Without the CR, no overcommit again.
    s.ok(&["-n", "kubevirt", "delete", "kubevirt", "kubevirt"]);
    assert_eq!(create(&s, &vmi("after-delete", None)).0, "96Mi");
}
