//! The controller's metrics (upstream's virt-controller): VMIs per phase and node with their
//! OS, workload, flavor, instancetype, preference and guest OS labels, each VM's resource
//! requests, and the controller's own leading and ready status. Pure over the listed objects;
//! [`collect`] lists them at scrape time.

use super::exposition::{Family, Kind};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};
use kubevirt_api::quantity::Quantity;
use std::collections::BTreeMap;

/// `kubevirt_vmi_phase_count`'s labels, in upstream's order.
const PHASE_LABELS: [&str; 12] = [
    "node",
    "phase",
    "os",
    "workload",
    "flavor",
    "instance_type",
    "preference",
    "guest_os_kernel_release",
    "guest_os_machine",
    "guest_os_arch",
    "guest_os_name",
    "guest_os_version_id",
];

/// What upstream writes for an annotation or label that is not there.
const NONE: &str = "<none>";

fn annotation_or_none(vmi: &VirtualMachineInstance, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| {
            vmi.annotations()
                .get(*k)
                .or_else(|| vmi.labels().get(*k))
                .filter(|v| !v.is_empty())
        })
        .cloned()
        .unwrap_or_else(|| NONE.to_string())
}

/// The label values of one VMI for `kubevirt_vmi_phase_count`.
fn phase_labels(vmi: &VirtualMachineInstance) -> [String; 12] {
    let status = vmi.status.as_ref();
    let os = status.and_then(|s| s.guest_os_info.as_ref());
    let os_field =
        |f: fn(&kubevirt_api::core::v1::VirtualMachineInstanceGuestOSInfo) -> Option<&String>| {
            os.and_then(f).cloned().unwrap_or_default()
        };
    let phase = crate::vm::instance::phase(vmi);
    [
        status.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        if phase.is_empty() {
            "pending".into()
        } else {
            phase.to_lowercase()
        },
        annotation_or_none(vmi, &["vm.kubevirt.io/os"]),
        annotation_or_none(vmi, &["vm.kubevirt.io/workload"]),
        annotation_or_none(vmi, &["vm.kubevirt.io/flavor"]),
        annotation_or_none(
            vmi,
            &[
                "kubevirt.io/instancetype-name",
                "kubevirt.io/cluster-instancetype-name",
            ],
        ),
        annotation_or_none(
            vmi,
            &[
                "kubevirt.io/preference-name",
                "kubevirt.io/cluster-preference-name",
            ],
        ),
        os_field(|o| o.kernel_release.as_ref()),
        os_field(|o| o.machine.as_ref()),
        // The guest agent's architecture: our guests have no agent.
        String::new(),
        os_field(|o| o.name.as_ref()),
        os_field(|o| o.version_id.as_ref()),
    ]
}

/// `kubevirt_vmi_phase_count`: VMIs counted per distinct label set.
pub fn phase_count(vmis: &[VirtualMachineInstance]) -> Family {
    let mut counts: BTreeMap<[String; 12], u64> = BTreeMap::new();
    for vmi in vmis {
        *counts.entry(phase_labels(vmi)).or_default() += 1;
    }
    let mut f = Family::new(
        "kubevirt_vmi_phase_count",
        "Sum of VMIs per phase and node. `phase` can be one of the following: [`Pending`, `Scheduling`, `Scheduled`, `Running`, `Succeeded`, `Failed`, `Unknown`].",
        Kind::Gauge,
    );
    for (values, n) in counts {
        let labels: Vec<(&'static str, &str)> = PHASE_LABELS
            .iter()
            .zip(values.iter())
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        f.push(&labels, n as f64);
    }
    f
}

/// `kubevirt_vm_resource_requests`: per VM, the memory (`guest`, `requests`) and CPU
/// (`requests` in cores; the domain's `cores`, `sockets`, `threads`) its template asks for.
pub fn resource_requests(vms: &[VirtualMachine]) -> Family {
    let mut f = Family::new(
        "kubevirt_vm_resource_requests",
        "Resources requested by Virtual Machine. Reports memory and CPU requests.",
        Kind::Gauge,
    );
    for vm in vms {
        let Some(spec) = vm.spec.template.spec.as_ref() else {
            continue;
        };
        let (name, namespace) = (vm.name_any(), vm.namespace().unwrap_or_default());
        let domain = &spec.domain;
        let mut push =
            |resource: &'static str, unit: &'static str, source: &'static str, v: f64| {
                f.push(
                    &[
                        ("name", name.as_str()),
                        ("namespace", namespace.as_str()),
                        ("resource", resource),
                        ("unit", unit),
                        ("source", source),
                    ],
                    v,
                );
            };
        let requests = domain.resources.as_ref().and_then(|r| r.requests.as_ref());
        let request = |what: &str| {
            requests
                .and_then(|r| r.get(what))
                .and_then(|q| Quantity::parse(&q.0).ok())
        };
        if let Some(b) = domain
            .memory
            .as_ref()
            .and_then(|m| m.guest.as_ref())
            .and_then(|q| Quantity::parse(&q.0).ok()?.to_bytes().ok())
        {
            push("memory", "bytes", "guest", b as f64);
        }
        if let Some(b) = request("memory").and_then(|q| q.to_bytes().ok()) {
            push("memory", "bytes", "requests", b as f64);
        }
        if let Some(m) = request("cpu").and_then(|q| q.ceil_milli_i128()) {
            push("cpu", "cores", "requests", m as f64 / 1000.0);
        }
        if let Some(cpu) = domain.cpu.as_ref() {
            for (unit, n) in [
                ("cores", cpu.cores),
                ("sockets", cpu.sockets),
                ("threads", cpu.threads),
            ] {
                if let Some(n) = n {
                    push("cpu", unit, "domain", f64::from(n));
                }
            }
        }
    }
    f
}

/// The controller's own status: it runs no leader election (one replica), so the running
/// one leads and is ready.
pub fn controller_status() -> Vec<Family> {
    vec![
        Family::new(
            "kubevirt_virt_controller_leading_status",
            "Indication for an operating virt-controller.",
            Kind::Gauge,
        )
        .with(&[], 1.0),
        Family::new(
            "kubevirt_virt_controller_ready_status",
            "Indication for a virt-controller that is ready to take the lead.",
            Kind::Gauge,
        )
        .with(&[], 1.0),
    ]
}

/// Every family of the controller, from the VMIs and VMs listed now (a failed list leaves its
/// families without samples and is logged).
pub async fn collect(client: Client) -> Vec<Family> {
    let lp = ListParams::default();
    let vmis = match Api::<VirtualMachineInstance>::all(client.clone())
        .list(&lp)
        .await
    {
        Ok(l) => l.items,
        Err(error) => {
            tracing::warn!(error = %error, "metrics: listing VMIs failed");
            Vec::new()
        }
    };
    let vms = match Api::<VirtualMachine>::all(client).list(&lp).await {
        Ok(l) => l.items,
        Err(error) => {
            tracing::warn!(error = %error, "metrics: listing VMs failed");
            Vec::new()
        }
    };
    let mut families = controller_status();
    families.push(phase_count(&vmis));
    families.push(resource_requests(&vms));
    families
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::render;

    fn vmi(name: &str, node: &str, phase: &str, os: Option<&str>) -> VirtualMachineInstance {
        let mut v: VirtualMachineInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"domain": {"devices": {}}},
            "status": {"nodeName": node, "phase": phase},
        }))
        .unwrap();
        if let Some(os) = os {
            v.annotations_mut()
                .insert("vm.kubevirt.io/os".into(), os.into());
        }
        v
    }

    #[test]
    fn vmis_are_counted_per_node_phase_and_labels() {
        let text = render(&[phase_count(&[
            vmi("a", "n1", "Running", None),
            vmi("b", "n1", "Running", None),
            vmi("c", "n1", "Running", Some("fedora")),
            vmi("d", "n2", "Scheduling", None),
        ])]);
        let none = "os=\"<none>\",workload=\"<none>\",flavor=\"<none>\",instance_type=\"<none>\",preference=\"<none>\"";
        let guest = "guest_os_kernel_release=\"\",guest_os_machine=\"\",guest_os_arch=\"\",guest_os_name=\"\",guest_os_version_id=\"\"";
        assert!(
            text.contains(&format!(
                "kubevirt_vmi_phase_count{{node=\"n1\",phase=\"running\",{none},{guest}}} 2\n"
            )),
            "{text}"
        );
        assert!(text.contains("phase=\"running\",os=\"fedora\","), "{text}");
        assert!(
            text.contains(&format!(
                "{{node=\"n2\",phase=\"scheduling\",{none},{guest}}} 1\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn a_vm_reports_its_memory_and_cpu_requests() {
        let vm: VirtualMachine = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "demo", "namespace": "ns"},
            "spec": {"template": {"spec": {"domain": {
                "devices": {},
                "cpu": {"cores": 2},
                "memory": {"guest": "64Mi"},
                "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}},
            }}}},
        }))
        .unwrap();
        let text = render(&[resource_requests(&[vm])]);
        let line = |r: &str, u: &str, s: &str, v: &str| {
            format!(
                "kubevirt_vm_resource_requests{{name=\"demo\",namespace=\"ns\",resource=\"{r}\",unit=\"{u}\",source=\"{s}\"}} {v}\n"
            )
        };
        for l in [
            line("memory", "bytes", "guest", "67108864"),
            line("memory", "bytes", "requests", "134217728"),
            line("cpu", "cores", "requests", "0.25"),
            line("cpu", "cores", "domain", "2"),
        ] {
            assert!(text.contains(&l), "{l} in\n{text}");
        }
    }
}
