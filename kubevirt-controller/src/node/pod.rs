//! The node agent's part for a VMI that runs in its virt-launcher pod ([`super::AgentMode::Pods`],
//! the pod contract of issue 14): the launcher (`kubevirt-launcher serve`) waits on
//! `<launcher-root>/<uid>/control.sock`; the agent attaches to it
//! ([`super::launcher::Launcher::attach`]), does what needs privilege and what the pod cannot do
//! for itself — the pod network's tap, bridge and NAT inside the pod's network namespace
//! (`kubevirt-launcher pod-network`, as upstream's virt-handler does) — and sends `start` once.
//! From then on the launcher is followed and reported as in direct mode ([`super::report`]),
//! with the pod's IP on the VMI's masquerade interfaces, as upstream reports them.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_launcher_protocol::ClientError;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::launcher::{Launcher, wants_pod_network};
use super::owner;
use super::report::Report;
use super::{NodeConfig, NodeError};
use crate::vmi::CREATED_BY_LABEL;
use crate::vmi::render::with_absolute_oci;

/// `kubevirt-launcher pod-network`'s exit code for a VMI it cannot prepare a network for.
pub const POD_NETWORK_INVALID: i32 = 2;
/// Its exit code for a namespace or set-up step that failed.
pub const POD_NETWORK_FAILED: i32 = 3;
/// The run directory of the VMI with `uid` on the host: `<launcher_root>/<uid>` (the pod's
/// `launcher` hostPath volume).
pub fn run_dir(launcher_root: &Path, uid: &str) -> PathBuf {
    launcher_root.join(uid)
}

/// Starts `l` (waiting in its pod) with `vmi`, once: prepares the pod network first when the
/// VMI wants one. `Ok(Some(why))`: it cannot be started (the VMI fails with `why`); `Ok(None)`:
/// started, or not reachable now (the next sync tries again).
///
/// # Errors
/// `kubevirt-launcher pod-network` could not be run at all.
pub async fn start(
    l: &mut Launcher,
    vmi: &VirtualMachineInstance,
    config: &NodeConfig,
    working_dir: &Path,
) -> Result<Option<String>, NodeError> {
    if l.started() {
        return Ok(None);
    }
    let launcher = config.launcher.as_path();
    // A VMI that resumes a memory state gets it in its run directory first.
    let restore_from = match resume_from(vmi, config, l.run_dir()) {
        Ok(r) => r,
        Err(why) => return Ok(Some(why)),
    };
    let network = wants_pod_network(vmi);
    let Some(pid) = l.pid() else {
        return Ok(None);
    };
    // What a non-root launcher cannot do itself: its claims' disks, and a tap for its uid.
    let (uid, gid) = match owner::launcher_ids(pid) {
        Ok(ids) => ids,
        Err(e) => return Ok(Some(format!("reading the launcher's user: {e}"))),
    };
    if let Err(e) = owner::own_claims(vmi, pid, uid, gid) {
        return Ok(Some(format!(
            "giving the claims to the launcher failed: {e}"
        )));
    }
    if network && let Err(why) = prepare_network(launcher, pid, uid, vmi).await? {
        return Ok(Some(format!("preparing the pod network failed: {why}")));
    }
    let document = match serde_json::to_value(with_absolute_oci(vmi, working_dir)) {
        Ok(d) => d,
        Err(e) => return Err(NodeError::Encode(e)),
    };
    match l.start(document, network, restore_from).await {
        Ok(()) => Ok(None),
        Err(e) if e.is_unreachable() => Ok(None),
        Err(ClientError::Reply(e)) => Ok(Some(format!("the launcher refused to start: {e}"))),
        Err(e) => Ok(Some(format!("starting the launcher failed: {e}"))),
    }
}

/// The memory state `vmi` resumes (its name, now placed in `run_dir`'s `snapshots/`), if it
/// carries a resume marker ([`crate::snapshot::memory::RESUME_ANNOTATION`]). `Err(why)`: it
/// cannot be resumed here (another node holds it, or it is gone) — the VMI fails rather than
/// boot a guest its VM expects to resume.
pub fn resume_from(
    vmi: &VirtualMachineInstance,
    config: &NodeConfig,
    run_dir: &Path,
) -> Result<Option<String>, String> {
    let Some(resume) = crate::snapshot::memory::vmi_resume(vmi) else {
        return Ok(None);
    };
    let resume = resume?;
    if resume.node != config.node_name {
        return Err(format!(
            "the memory state {} to resume is on node {}, and this VMI was placed on {}",
            resume.content, resume.node, config.node_name
        ));
    }
    let namespace = vmi.metadata.namespace.clone().unwrap_or_default();
    super::memory::place(&config.run_root, &namespace, &resume.content, run_dir)
        .map_err(|e| format!("resuming the memory state failed: {e}"))?;
    Ok(Some(resume.content))
}

/// Runs `<launcher> pod-network --netns /proc/<pid>/ns/net --tap-owner <uid> --vmi -` with `vmi`
/// on its stdin: the tap is `uid`'s, the launcher's, which opens it with no capability. `Ok(Err(why))`: it refused or failed (exit 2 or 3, or killed), `why` from its
/// stderr.
///
/// # Errors
/// It could not be run.
pub async fn prepare_network(
    launcher: &Path,
    pid: u32,
    uid: u32,
    vmi: &VirtualMachineInstance,
) -> Result<Result<(), String>, NodeError> {
    let fail = |source| NodeError::PodNetwork {
        launcher: launcher.to_path_buf(),
        source,
    };
    let document = serde_json::to_vec(vmi).map_err(NodeError::Encode)?;
    let mut child = Command::new(launcher)
        .arg("pod-network")
        .arg("--netns")
        .arg(format!("/proc/{pid}/ns/net"))
        .args(["--tap-owner", &uid.to_string(), "--vmi", "-"])
        // One JSON object a line (upstream's keys): the failure's message and error fields.
        .args(["--log-format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(fail)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&document).await.map_err(fail)?;
    }
    let out = child.wait_with_output().await.map_err(fail)?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(said_in);
    let what = match out.status.code() {
        Some(POD_NETWORK_INVALID) => "the VMI's pod network is invalid".to_string(),
        Some(POD_NETWORK_FAILED) => "a set-up step failed".to_string(),
        Some(c) => format!("pod-network exited with code {c}"),
        None => "pod-network was killed".to_string(),
    };
    Ok(Err(match said {
        Some(s) => format!("{what}: {s}"),
        None => what,
    }))
}

/// What a `pod-network` log line says: its `msg` and `error` fields (`--log-format json`),
/// else the line itself.
fn said_in(line: &str) -> String {
    let line = line.trim();
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(line) else {
        return line.trim_start_matches("error: ").to_string();
    };
    let text = |k: &str| fields.get(k).and_then(serde_json::Value::as_str);
    match (text("msg"), text("error")) {
        (Some(m), Some(e)) => format!("{m}: {e}"),
        (Some(m), None) => m.to_string(),
        (None, Some(e)) => e.to_string(),
        (None, None) => line.to_string(),
    }
}

/// `report` with `pod_ip` as the address of every masquerade interface: the guest hides behind
/// the pod's IP, which is what reaches it (upstream reports it so).
pub fn with_pod_ip(report: &mut Report, pod_ip: &str) {
    if let Report::Status(s) = report {
        for i in &mut s.guest.interfaces {
            if i.binding == "masquerade" {
                i.guest_ip = Some(pod_ip.to_string());
            }
        }
    }
}

/// The IP of the virt-launcher pod of the VMI with `uid` in `namespace`, once it has one.
pub async fn pod_ip(client: &kube::Client, namespace: &str, uid: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{CREATED_BY_LABEL}={uid}")))
        .await
        .ok()?;
    listed
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .find_map(|p| p.status?.pod_ip.filter(|ip| !ip.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubevirt_launcher_protocol::{GuestInfo, GuestInterface, Phase, Status};

    fn iface(name: &str, binding: &str, ip: &str) -> GuestInterface {
        GuestInterface {
            name: name.into(),
            mac: "02:00:00:00:00:01".into(),
            guest_ip: Some(ip.into()),
            binding: binding.into(),
        }
    }

    #[test]
    fn a_pod_network_failure_reads_as_its_log_lines_message_and_error() {
        let json = r#"{"level":"error","msg":"preparing the pod network failed","error":"no eth0","component":"virt-launcher"}"#;
        assert_eq!(said_in(json), "preparing the pod network failed: no eth0");
        assert_eq!(said_in("error: plain words"), "plain words");
        assert_eq!(said_in(r#"{"msg":"only this"}"#), "only this");
    }

    fn config(root: &Path) -> NodeConfig {
        NodeConfig {
            node_name: "n1".into(),
            launcher: "kubevirt-launcher".into(),
            run_root: root.to_path_buf(),
            cache_dir: root.join("cache"),
            volumes_dir: root.join("volumes"),
            launcher_args: Vec::new(),
            claim_unscheduled: false,
            peers: None,
        }
    }

    fn vmi_resuming(node: &str) -> VirtualMachineInstance {
        let marker = serde_json::json!({"content": "vmsnapshot-content-1", "node": node,
            "restore": "r1-u", "claims": {}, "shape": {"vcpus": 1, "memoryBytes": 1,
            "disks": [], "interfaces": [], "rng": false, "boot": "kernel"}});
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "v", "namespace": "ns", "uid": "u2", "annotations":
                {crate::snapshot::memory::RESUME_ANNOTATION: marker.to_string()}},
            "spec": {"domain": {"devices": {}}}
        }))
        .unwrap()
    }

    #[test]
    fn a_memory_state_resumes_only_on_its_node_and_only_if_it_is_there() {
        let root = std::env::temp_dir().join(format!("kv-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let run = root.join("u2");
        let plain: VirtualMachineInstance = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "v", "namespace": "ns"}, "spec": {"domain": {"devices": {}}}}),
        )
        .unwrap();
        assert_eq!(resume_from(&plain, &config(&root), &run), Ok(None));
        let other = resume_from(&vmi_resuming("n2"), &config(&root), &run).unwrap_err();
        assert!(other.contains("is on node n2"), "{other}");
        let gone = resume_from(&vmi_resuming("n1"), &config(&root), &run).unwrap_err();
        assert!(gone.contains("not on this node"), "{gone}");
        let stored = crate::node::memory::stored(&root, "ns", "vmsnapshot-content-1");
        std::fs::create_dir_all(&stored).unwrap();
        std::fs::write(stored.join("vmstate"), b"s").unwrap();
        assert_eq!(
            resume_from(&vmi_resuming("n1"), &config(&root), &run),
            Ok(Some("vmsnapshot-content-1".into()))
        );
        assert!(run.join("snapshots/vmsnapshot-content-1/vmstate").is_file());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn masquerade_interfaces_show_the_pod_ip_and_bridged_ones_their_own() {
        let mut r = Report::Status(Box::new(Status {
            phase: Phase::Running,
            guest: GuestInfo {
                interfaces: vec![
                    iface("default", "masquerade", "10.0.2.2"),
                    iface("br", "bridge", "10.244.0.7"),
                ],
                ..GuestInfo::default()
            },
            ..Status::default()
        }));
        with_pod_ip(&mut r, "10.88.0.5");
        let Report::Status(s) = r else {
            panic!("still a status")
        };
        let ips: Vec<_> = s
            .guest
            .interfaces
            .iter()
            .map(|i| i.guest_ip.as_deref())
            .collect();
        assert_eq!(ips, [Some("10.88.0.5"), Some("10.244.0.7")]);
    }
}
