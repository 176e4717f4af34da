//! The node agent dies (kill -9) and restarts while guests run: the running guest is adopted,
//! not failed and not started twice (same launcher process, no guest restart, one launcher), and
//! deleting its VMI afterwards still powers it off gracefully; the launcher of a VMI deleted
//! while the agent was down is stopped when it comes back, and a guest that powered off while the
//! agent was down has its VMI Succeeded from the final status its launcher left.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, eventually};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_launcher_protocol::{CONTROL_SOCKET, Client, Status};
use kubevirt_testsupport::{Profile, demo_image, launcher_binary, launchers_in, process_alive};
use serde_json::json;

fn launcher() -> PathBuf {
    launcher_binary(Profile::Debug)
}

fn vmi_doc(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 20
  domain:
    memory: {{guest: 64Mi}}
    firmware:
      kernelBoot:
        container: {{image: "{image}", kernelPath: /boot/demo.elf}}
    devices:
      autoattachPodInterface: false
      disks:
      - name: scratch
        disk: {{bus: virtio}}
  volumes:
  - name: scratch
    emptyDisk: {{capacity: 1Mi}}
"#
    )
}

/// `kubevirt-controller node` as its own process, leading its own process group (as a service
/// manager starts it), so the test can kill the whole group.
fn start_agent(c: &Cluster, launcher: &Path, work: &Path) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .arg("node")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["--node-name", "local", "--launcher"])
        .arg(launcher)
        .arg("--run-root")
        .arg(work.join("run"))
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .arg("--volumes-dir")
        .arg(work.join("volumes"))
        .stdin(Stdio::null())
        .process_group(0)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-controller node");
    Agent(child)
}

/// The agent process; if the test fails half way it is stopped with SIGTERM (which stops its
/// launchers too) rather than left running.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) on a child this test spawned and has not reaped.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
}

fn run_dir(work: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(work.join("run").join("default"))
        .ok()?
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .map(|e| e.path())
}

async fn status(work: &Path, name: &str) -> Option<Status> {
    let client = Client::new(run_dir(work, name)?.join(CONTROL_SOCKET));
    tokio::task::spawn_blocking(move || client.status().ok())
        .await
        .ok()?
}

/// kill -9 of the agent's whole process group (what a service manager or a terminal does):
/// the launchers, in groups of their own, are not in it.
fn kill9(Agent(child): &mut Agent) {
    // SAFETY: kill(2) on the process group of a child this test spawned (as its leader) and
    // has not reaped.
    let r = unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    assert_eq!(r, 0);
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_restarts_and_adopts_the_running_guest() {
    let launcher = tokio::task::spawn_blocking(launcher).await.unwrap();
    let c = Cluster::start(false).await;
    let work = c.dir.join("node");
    std::fs::create_dir_all(&work).unwrap();
    let image = demo_image(&work);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");

    let mut agent = start_agent(&c, &launcher, &work);
    for name in ["keep", "gone", "poweroff"] {
        let (ok, _, err) = c
            .kubectl(&["apply", "-f", "-"], Some(&vmi_doc(name, &image)))
            .await;
        assert!(ok, "kubectl apply: {err}");
    }
    let mut before = Vec::new();
    for name in ["keep", "gone", "poweroff"] {
        eventually("a Running VMI", || async {
            let s = vmis.get_opt(name).await.ok()??.status?;
            (s.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        let s = eventually("the launcher's status", || status(&work, name)).await;
        before.push(s.launcher.clone().expect("the launcher names itself"));
    }
    let (keep, gone, off) = (before[0].clone(), before[1].clone(), before[2].clone());
    assert_eq!(keep.name, "keep");
    let keep_uid = vmis.get("keep").await.unwrap().metadata.uid.unwrap();
    assert_eq!(keep.uid, keep_uid);

    // The agent dies; the guests run on.
    kill9(&mut agent);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        process_alive(keep.pid) && process_alive(gone.pid),
        "the launchers outlive their agent"
    );
    // "gone" is deleted while no agent runs (its finalizer removed by hand, as an operator
    // would): its launcher is an orphan now.
    vmis.delete("gone", &DeleteParams::default()).await.unwrap();
    let unfinalize = json!({"metadata": {"finalizers": null}});
    vmis.patch("gone", &PatchParams::default(), &Patch::Merge(&unfinalize))
        .await
        .unwrap();
    eventually("the VMI gone", || async {
        vmis.get_opt("gone").await.unwrap().is_none().then_some(())
    })
    .await;

    // "poweroff"'s guest powers off while no agent runs: its launcher exits, leaving its final status.
    let client = Client::new(run_dir(&work, "poweroff").unwrap().join(CONTROL_SOCKET));
    tokio::task::spawn_blocking(move || {
        client.act(&kubevirt_launcher_protocol::Request::Shutdown {
            grace_period_seconds: Some(20),
        })
    })
    .await
    .unwrap()
    .unwrap();
    eventually("the powered-off launcher exited", || async {
        (!process_alive(off.pid)).then_some(())
    })
    .await;

    let mut agent = start_agent(&c, &launcher, &work);
    eventually("the powered-off VMI Succeeded", || async {
        let s = vmis.get_opt("poweroff").await.ok()??.status?;
        (s.phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    eventually("the orphan launcher stopped", || async {
        (!process_alive(gone.pid) && run_dir(&work, "gone").is_none()).then_some(())
    })
    .await;
    // The guest was adopted: a few polls later its VMI is still Running on the same launcher,
    // which never restarted the guest, and no second launcher was started.
    for _ in 0..6 {
        let s = vmis.get("keep").await.unwrap().status.unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"), "{s:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now = status(&work, "keep").await.expect("the launcher answers");
    assert_eq!(now.launcher.as_ref().map(|l| l.pid), Some(keep.pid));
    assert_eq!(now.restarts, 0, "the guest was not restarted");
    let dir = run_dir(&work, "keep").unwrap();
    assert_eq!(
        launchers_in(&dir),
        vec![keep.pid],
        "one launcher for the VMI"
    );

    // The restarted agent still owns it: pausing shows on the VMI, and deleting the VMI powers
    // the guest off (ACPI, well before the 20 s grace period) before the VMI goes.
    let client = Client::new(dir.join(CONTROL_SOCKET));
    tokio::task::spawn_blocking(move || client.act(&kubevirt_launcher_protocol::Request::Pause))
        .await
        .unwrap()
        .unwrap();
    eventually("the Paused condition", || async {
        let s = vmis.get("keep").await.ok()?.status?;
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Paused" && c.status == "True")
            .then_some(())
    })
    .await;
    let client = Client::new(dir.join(CONTROL_SOCKET));
    tokio::task::spawn_blocking(move || client.act(&kubevirt_launcher_protocol::Request::Unpause))
        .await
        .unwrap()
        .unwrap();
    let asked = Instant::now();
    let (ok, _, err) = c
        .kubectl(&["delete", "vmi", "keep", "--wait=false"], None)
        .await;
    assert!(ok, "kubectl delete: {err}");
    eventually("the VMI gone", || async {
        vmis.get_opt("keep").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(!process_alive(keep.pid), "the launcher exited");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the guest took {took:?} to go: it was not powered off gracefully"
    );
    kill9(&mut agent);
}
