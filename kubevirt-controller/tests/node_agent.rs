//! The whole local path with real parts: `kubectl apply` of a VM → the VM controller makes its
//! VMI → the node agent starts `kubevirt-launcher` → the demo guest boots on kubevirt-vmm (real
//! vCPUs) → Running, node and Ready reach the VMI and the VM; halting the VM presses the guest's
//! ACPI power button, and the VMI goes once the guest is off.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Cluster, eventually};
use kube::api::{Api, Patch, PatchParams};
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};
use kubevirt_controller::node::{AgentMode, NodeConfig};
use kubevirt_launcher_protocol::{
    CONSOLE_SOCKET, CONTROL_SOCKET, Client, ExitStatus, FinalStatus, Request,
};
use kubevirt_testsupport::{Profile, demo_image, find_file as find, launcher_binary};
use serde_json::json;

fn vm(image: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: demo
spec:
  runStrategy: Always
  template:
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
          - name: cloudinit
            disk: {{bus: virtio}}
      volumes:
      - name: cloudinit
        cloudInitNoCloud:
          userData: |
            #cloud-config
            hostname: applied-with-kubectl
"#
    )
}

/// What the guest printed so far (the console socket's scroll-back).
fn console(run_root: &Path) -> String {
    let Some(socket) = find(run_root, CONSOLE_SOCKET) else {
        return String::new();
    };
    let Ok(mut s) = UnixStream::connect(socket) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut text = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

async fn vmi_phase(vmis: &Api<VirtualMachineInstance>) -> Option<(String, String, String)> {
    let v = vmis.get_opt("demo").await.ok()??;
    let s = v.status?;
    Some((
        v.metadata.uid?,
        s.phase.map(String::from).unwrap_or_default(),
        s.node_name.unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_boots_the_vm_and_halting_it_powers_the_guest_off() {
    let launcher = tokio::task::spawn_blocking(|| launcher_binary(Profile::Debug))
        .await
        .unwrap();
    let c = Cluster::start(false).await;
    let work = c.dir.join("node");
    let image = demo_image(&work);
    let config = NodeConfig {
        node_name: "local".into(),
        launcher,
        run_root: work.join("run"),
        cache_dir: work.join("cache"),
        volumes_dir: work.join("volumes"),
        launcher_args: vec![],
        claim_unscheduled: true,
        peers: None,
    };
    let run_root = config.run_root.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let controller = tokio::spawn(kubevirt_controller::vm::controller::run(
        c.client.clone(),
        stopped(stop_rx.clone()),
        |_| {},
    ));
    let agent = tokio::spawn(kubevirt_controller::node::agent::run(
        c.client.clone(),
        config,
        AgentMode::Direct,
        stopped(stop_rx),
        |r| {
            if let Err(e) = r {
                eprintln!("agent: {e}");
            }
        },
    ));

    let (ok, _, err) = c.kubectl(&["apply", "-f", "-"], Some(&vm(&image))).await;
    assert!(ok, "kubectl apply: {err}");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");
    let vms: Api<VirtualMachine> = Api::namespaced(c.client.clone(), "default");

    // The guest runs: the VMI is Running on the node, and the guest's console shows the
    // hostname cloud-init gave it.
    let (uid, _, node) = eventually("a Running VMI", || async {
        vmi_phase(&vmis).await.filter(|(_, p, _)| p == "Running")
    })
    .await;
    assert_eq!(node, "local");
    let seen = eventually("the guest's cloud-init output", || async {
        let text = console(&run_root);
        text.contains("hostname applied-with-kubectl")
            .then_some(text)
    })
    .await;
    assert!(seen.contains("kubevirt-rs demo guest"), "{seen}");
    eventually("the VM Running and ready", || async {
        let s = vms.get("demo").await.ok()?.status?;
        (s.printable_status.as_deref() == Some("Running") && s.ready == Some(true)).then_some(())
    })
    .await;
    let (_, out, _) = c
        .kubectl(&["get", "vmi", "demo", "--no-headers"], None)
        .await;
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(
        words.contains(&"Running") && words.contains(&"local"),
        "kubectl get vmi: {out}"
    );

    // Halting the VM deletes the VMI; the agent presses the power button, the demo guest
    // powers off, and only then does the VMI go.
    let halt = json!({"spec": {"runStrategy": "Halted"}});
    vms.patch("demo", &PatchParams::default(), &Patch::Merge(&halt))
        .await
        .unwrap();
    eventually("the VMI gone", || async {
        vmis.get_opt("demo").await.unwrap().is_none().then_some(())
    })
    .await;
    eventually("the VM Stopped", || async {
        let s = vms.get("demo").await.ok()?.status?;
        (s.printable_status.as_deref() == Some("Stopped")).then_some(())
    })
    .await;
    assert!(
        find(&run_root, CONTROL_SOCKET).is_none(),
        "the run directory is removed"
    );

    // Started again, then the guest powers off by itself (ACPI button through the launcher's
    // control socket, as `virtctl stop` would reach it): the VMI Succeeds and Always starts a
    // new one.
    let start = json!({"spec": {"runStrategy": "Always"}});
    vms.patch("demo", &PatchParams::default(), &Patch::Merge(&start))
        .await
        .unwrap();
    let (second, _, _) = eventually("a second Running VMI", || async {
        vmi_phase(&vmis)
            .await
            .filter(|(u, p, _)| p == "Running" && *u != uid)
    })
    .await;
    let control = find(&run_root, CONTROL_SOCKET).expect("the launcher's control socket");
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut s = UnixStream::connect(control).unwrap();
        s.write_all(b"{\"op\":\"shutdown\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(answer.contains("\"ok\":true"), "{answer}");
    eventually("a third VMI after the guest powered off", || async {
        vmi_phase(&vmis)
            .await
            .filter(|(u, _, _)| *u != uid && *u != second)
    })
    .await;

    // The node agent told the VMIs' story as virt-handler does, from the node.
    let selector = "involvedObject.kind=VirtualMachineInstance,involvedObject.name=demo";
    let told = eventually("the agent's events", || async {
        let (_, out, _) = c
            .kubectl(
                &["get", "events", "--field-selector", selector, "-o",
                  "jsonpath={range .items[*]}{.reason} {.type} {.source.component} {.source.host}{\"\\n\"}{end}"],
                None,
            )
            .await;
        let lines: Vec<String> = out.lines().map(String::from).collect();
        let n = |r: &str| lines.iter().filter(|l| l.starts_with(&format!("{r} "))).count();
        (n("Started") >= 2 && n("ShuttingDown") >= 1 && n("Stopped") >= 1).then_some(lines)
    })
    .await;
    for line in &told {
        assert!(line.ends_with(" virt-handler local"), "{told:?}");
    }
    assert!(
        told.iter()
            .any(|l| l == "Stopped Normal virt-handler local"),
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|l| l == "ShuttingDown Normal virt-handler local"),
        "{told:?}"
    );

    let _ = stop_tx.send(true);
    for task in [controller, agent] {
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("stops")
            .unwrap();
    }
}

/// A VMI as the API server takes it, booting the demo image (or naming `image` only).
fn vmi_doc(name: &str, image: &str, bus: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 5
  domain:
    memory: {{guest: 64Mi}}
    firmware:
      kernelBoot:
        container: {{image: "{image}", kernelPath: /boot/demo.elf}}
    devices:
      autoattachPodInterface: false
      disks:
      - name: scratch
        disk: {{bus: {bus}}}
  volumes:
  - name: scratch
    emptyDisk: {{capacity: 1Mi}}
"#
    )
}

/// Starts the node agent with `launcher`; the sender stops it.
fn start_agent(
    c: &Cluster,
    launcher: PathBuf,
    work: &Path,
) -> (
    NodeConfig,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let config = NodeConfig {
        node_name: "local".into(),
        launcher,
        run_root: work.join("run"),
        cache_dir: work.join("cache"),
        volumes_dir: work.join("volumes"),
        launcher_args: vec![],
        claim_unscheduled: true,
        peers: None,
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(kubevirt_controller::node::agent::run(
        c.client.clone(),
        config.clone(),
        AgentMode::Direct,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
        |r| {
            if let Err(e) = r {
                eprintln!("agent: {e}");
            }
        },
    ));
    (config, stop_tx, agent)
}

async fn vmi_status(
    vmis: &Api<VirtualMachineInstance>,
    name: &str,
) -> Option<kubevirt_api::core::v1::VirtualMachineInstanceStatus> {
    vmis.get_opt(name).await.ok()??.status
}

/// A VMI the launcher refuses (exit code 2) fails with the launcher's own reason, field path
/// included, read from its final status rather than its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmi_the_launcher_refuses_fails_with_its_reason() {
    let launcher = tokio::task::spawn_blocking(|| launcher_binary(Profile::Debug))
        .await
        .unwrap();
    let c = Cluster::start(false).await;
    let work = c.dir.join("node");
    let (config, stop_tx, agent) = start_agent(&c, launcher, &work);
    // Valid for the API (sata is an upstream bus), not something kubevirt-rs attaches.
    let (ok, _, err) = c
        .kubectl(
            &["apply", "-f", "-"],
            Some(&vmi_doc("refused", "oci:/nowhere:x", "sata")),
        )
        .await;
    assert!(ok, "kubectl apply: {err}");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");
    let status = eventually("the refused VMI Failed", || async {
        vmi_status(&vmis, "refused")
            .await
            .filter(|s| s.phase.as_deref() == Some("Failed"))
    })
    .await;
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("refused the VMI")
            && reason.contains("spec.domain.devices.disks[0].disk.bus"),
        "{reason}"
    );
    let last = find(&config.run_root, kubevirt_launcher_protocol::FINAL_STATUS)
        .and_then(|f| FinalStatus::read(f.parent()?).ok()?)
        .expect("the launcher's final status");
    assert_eq!(last.exit, ExitStatus::Invalid);
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("stops")
        .unwrap();
}

/// Launchers that accept a control connection and never answer (each request waits out the
/// protocol's 2 s timeout) do not hold up another VMI: pausing and resuming the healthy guest
/// reaches its VMI within a poll or two, as it does with no stuck launcher at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_launcher_does_not_delay_another_vmis_status() {
    let real = tokio::task::spawn_blocking(|| launcher_binary(Profile::Debug))
        .await
        .unwrap();
    let c = Cluster::start(false).await;
    let work = c.dir.join("node");
    std::fs::create_dir_all(&work).unwrap();
    let image = demo_image(&work);
    // The launcher for VMIs named stuck-*: a process that never serves its control socket
    // (this test serves it, without answering); the others run the real launcher.
    let wrapper = work.join("launcher.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ndoc=$(cat)\ncase \"$doc\" in *'\"name\":\"stuck-'*) exec sleep 600 ;; esac\n\
             tmp=$(mktemp -p {work})\nprintf '%s' \"$doc\" > \"$tmp\"\nexec {real} \"$@\" < \"$tmp\"\n",
            work = work.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (config, stop_tx, agent) = start_agent(&c, wrapper, &work);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");

    let mut held = Vec::new();
    for i in 0..4 {
        let name = format!("stuck-{i}");
        let (ok, _, err) = c
            .kubectl(
                &["apply", "-f", "-"],
                Some(&vmi_doc(&name, &image, "virtio")),
            )
            .await;
        assert!(ok, "kubectl apply: {err}");
        let uid = eventually("the stuck VMI's uid", || async {
            vmis.get_opt(&name).await.ok()??.metadata.uid
        })
        .await;
        let dir = config
            .run_root
            .join("default")
            .join(format!("{name}-{}", &uid[..8]));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join(CONTROL_SOCKET)).unwrap();
        // Accept every connection and keep it open, answering nothing.
        held.push(std::thread::spawn(move || {
            let mut open = Vec::new();
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => open.push(c),
                    Err(_) => return,
                }
            }
        }));
    }
    let (ok, _, err) = c
        .kubectl(
            &["apply", "-f", "-"],
            Some(&vmi_doc("healthy", &image, "virtio")),
        )
        .await;
    assert!(ok, "kubectl apply: {err}");
    eventually("the healthy VMI Running", || async {
        vmi_status(&vmis, "healthy")
            .await
            .filter(|s| s.phase.as_deref() == Some("Running"))
    })
    .await;
    let control = std::fs::read_dir(config.run_root.join("default"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("healthy-"))
        .map(|e| e.path().join(CONTROL_SOCKET))
        .expect("the healthy launcher's run directory");
    let client = Client::new(control);
    for (request, paused) in [(Request::Pause, true), (Request::Unpause, false)] {
        let asked = std::time::Instant::now();
        let (c2, r2) = (client.clone(), request.clone());
        tokio::task::spawn_blocking(move || c2.act(&r2))
            .await
            .unwrap()
            .unwrap();
        eventually("the VMI's Paused condition to follow", || async {
            let s = vmi_status(&vmis, "healthy").await?;
            let shown = s
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Paused" && c.status == "True");
            (shown == paused).then_some(())
        })
        .await;
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "{request:?} took {took:?} to reach the VMI: the stuck launchers held it up"
        );
    }
    // The stuck ones are still only Scheduled: their launchers never answered.
    let stuck = vmi_status(&vmis, "stuck-0").await.unwrap();
    assert_eq!(stuck.phase.as_deref(), Some("Scheduled"));
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("stops")
        .unwrap();
    drop(held);
}
