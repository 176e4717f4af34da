//! virtctl and kubectl against `kubevirt-local up` (in process, with its node agent) running
//! the demo guest on real vCPUs: the subresource API's discovery, stop/start/restart, pause
//! (the guest really stops: typed input gets no echo until unpause), the console in a
//! pseudo-terminal (typed `uname` reaches the guest and its answer comes back, `Ctrl+]` leaves,
//! a second client disconnects the first), dry runs change nothing, upstream's error words,
//! soft reboot, `expose`, `create vm | kubectl apply`, and a websocket upgrade without a token
//! is refused.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubevirt_testsupport::{Profile, demo_image, eventually, kubectl, tempdir};
use support::Plane;

mod support;

const VIRTCTL: &str = env!("CARGO_BIN_EXE_virtctl");

fn virtctl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(VIRTCTL)
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run virtctl")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn jsonpath(kubeconfig: &Path, what: &str, path: &str) -> String {
    let o = kubectl(
        kubeconfig,
        &["get", what, "-o", &format!("jsonpath={path}")],
        None,
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn vm_status(k: &Path) -> String {
    jsonpath(k, "vm/demo", "{.status.printableStatus}")
}

/// The running VMI's uid, once the VMI is Running.
fn running_uid(k: &Path) -> Option<String> {
    let s = jsonpath(k, "vmi/demo", "{.metadata.uid} {.status.phase}");
    let (uid, phase) = s.split_once(' ')?;
    (phase == "Running").then(|| uid.to_string())
}

/// `virtctl console demo` in a pseudo-terminal: what it prints is collected.
struct Console {
    child: Child,
    leader: File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Console {
    fn attach(kubeconfig: &Path) -> Console {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let leader: OwnedFd = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&leader).unwrap();
        unlockpt(&leader).unwrap();
        let name = ptsname(&leader, Vec::new()).unwrap();
        let sub = File::options()
            .read(true)
            .write(true)
            .open(PathBuf::from(name.to_str().unwrap()))
            .unwrap();
        let child = Command::new(VIRTCTL)
            .env("KUBECONFIG", kubeconfig)
            .args(["console", "demo"])
            .stdin(sub.try_clone().unwrap())
            .stdout(sub.try_clone().unwrap())
            .stderr(sub)
            .spawn()
            .unwrap();
        let leader = File::from(leader);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (leader.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Console {
            child,
            leader,
            seen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()[from..]).into_owned()
    }

    fn type_(&mut self, s: &[u8]) {
        self.leader.write_all(s).unwrap();
    }

    fn wait_for(&self, what: &str, from: usize) -> String {
        eventually(what, || {
            let t = self.since(from);
            t.contains(what).then_some(t)
        })
    }

    fn exit(&mut self) -> std::process::ExitStatus {
        eventually("virtctl console to exit", || self.child.try_wait().unwrap())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn virtctl_drives_the_demo_vm_through_the_subresource_api() {
    let dir = tempdir("virtctl");
    let image = demo_image(&dir);
    let plane = Plane::start(&dir, Profile::Debug);
    let k = plane.kubeconfig();

    // Discovery: the group is served and listed.
    let raw = ok(&kubectl(
        k,
        &["get", "--raw", "/apis/subresources.kubevirt.io/v1"],
        None,
    ));
    assert!(
        raw.contains("virtualmachines/start") && raw.contains("virtualmachineinstances/console"),
        "{raw}"
    );
    let groups = ok(&kubectl(k, &["get", "--raw", "/apis"], None));
    assert!(groups.contains("subresources.kubevirt.io/v1"), "{groups}");
    ok(&kubectl(k, &["api-resources"], None));
    // kubectl finds the plugin on the PATH: `kubectl virt` is virtctl.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-virt"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let plugin = Command::new("kubectl")
        .env("KUBECONFIG", k)
        .env("PATH", path)
        .args(["virt", "version"])
        .output()
        .unwrap();
    assert!(ok(&plugin).contains("Server Version: "), "{plugin:?}");
    let version = ok(&virtctl(k, &["version"]));
    assert!(
        version.contains("Client Version: ") && version.contains("Server Version: "),
        "{version}"
    );

    // Bad input: upstream's words, non-zero exits, usage for unknown flags.
    let o = virtctl(k, &["stop", "nosuchvm"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("virtualmachine.kubevirt.io \"nosuchvm\" not found"),
        "{err}"
    );
    let o = virtctl(k, &["stop", "--bogus", "demo"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Usage"),
        "{o:?}"
    );
    let o = virtctl(k, &["stop", "demo", "--grace-period", "5"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--force=true"),
        "{o:?}"
    );

    ok(&kubectl(
        k,
        &["apply", "-f", "-"],
        Some(&support::demo_vm(&image)),
    ));
    let first = eventually("a Running VMI", || running_uid(k));
    eventually("the VM Running", || {
        (vm_status(k) == "Running").then_some(())
    });

    // A websocket upgrade without the token is refused.
    let console_url = format!(
        "{}/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/demo/console",
        plane.started.url
    );
    let curl = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
        .args([
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ])
        .arg(&console_url)
        .output()
        .expect("curl is installed");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "401");

    // The console in a terminal: typed input reaches the guest, its answer comes back.
    let mut console = Console::attach(k);
    console.wait_for("The escape sequence is ^]", 0);
    let mark = console.len();
    console.type_(b"uname\r");
    console.wait_for("kubevirt-rs-demo demo-vm", mark);

    // Pause: the Paused condition, and the guest really stops (no echo of what is typed).
    ok(&virtctl(k, &["pause", "vm", "demo"]));
    eventually("the VMI Paused", || {
        (jsonpath(
            k,
            "vmi/demo",
            "{.status.conditions[?(@.type=='Paused')].status}",
        ) == "True")
            .then_some(())
    });
    eventually("the VM Paused", || (vm_status(k) == "Paused").then_some(()));
    let o = virtctl(k, &["pause", "vmi", "demo"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("VMI is already paused"),
        "{o:?}"
    );
    let mark = console.len();
    console.type_(b"hostname\r");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(console.since(mark), "", "a paused guest answers nothing");
    ok(&virtctl(k, &["unpause", "vmi", "demo"]));
    console.wait_for("hostname\r\ndemo-vm", mark);
    eventually("the VMI unpaused", || {
        jsonpath(
            k,
            "vmi/demo",
            "{.status.conditions[?(@.type=='Paused')].status}",
        )
        .is_empty()
        .then_some(())
    });

    // No guest agent runs in the demo guest: upstream's answer.
    let o = virtctl(k, &["guestosinfo", "demo"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("VMI does not have guest agent connected"),
        "{o:?}"
    );

    // Ctrl+] leaves.
    console.type_(&[0x1d]);
    assert!(console.exit().success(), "{}", console.text());

    // A second console client disconnects the first, as upstream.
    let mut first_console = Console::attach(k);
    first_console.wait_for("The escape sequence is ^]", 0);
    let second = virtctl(k, &["console", "demo"]);
    assert!(second.status.success(), "{second:?}");
    assert!(!first_console.exit().success());
    // The pty's reader thread may still be copying virtctl's last words after it exited.
    first_console.wait_for("You were disconnected from the console", 0);

    // Dry runs change nothing.
    ok(&virtctl(k, &["stop", "demo", "--dry-run"]));
    ok(&virtctl(k, &["restart", "demo", "--dry-run"]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(running_uid(k).as_deref(), Some(first.as_str()));
    assert_eq!(jsonpath(k, "vm/demo", "{.spec.runStrategy}"), "Always");

    // Restart: a new VMI.
    ok(&virtctl(k, &["restart", "demo"]));
    let second = eventually("a new Running VMI", || {
        running_uid(k).filter(|u| *u != first)
    });

    // Stop, and stop again; the console then says the VMI is not there.
    let stopped = ok(&virtctl(k, &["stop", "demo"]));
    assert_eq!(stopped.trim(), "VM demo was scheduled to stop");
    eventually("the VM Stopped", || {
        (vm_status(k) == "Stopped").then_some(())
    });
    let o = virtctl(k, &["stop", "demo"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("VM is not running"),
        "{o:?}"
    );
    let o = virtctl(k, &["console", "demo", "--timeout", "0"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("virtualmachineinstance.kubevirt.io \"demo\" not found"),
        "{o:?}"
    );
    ok(&virtctl(k, &["start", "demo", "--dry-run"]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(vm_status(k), "Stopped");

    // A console opened while the VM is stopped waits (--timeout) and attaches once it runs.
    let mut waiting = Console::attach(k);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !waiting.text().contains("Successfully connected"),
        "{}",
        waiting.text()
    );

    // Start: Running again, on a third VMI.
    ok(&virtctl(k, &["start", "demo"]));
    waiting.wait_for("The escape sequence is ^]", 0);
    waiting.wait_for("demo-vm# ", 0);
    waiting.type_(&[0x1d]);
    assert!(waiting.exit().success(), "{}", waiting.text());
    eventually("the VM Running again", || {
        running_uid(k).filter(|u| *u != first && *u != second)
    });
    let o = virtctl(k, &["start", "demo"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("VM is already running"),
        "{o:?}"
    );

    // Soft reboot: the guest boots again in the same VMI (its console shows a second boot).
    let third = running_uid(k).unwrap();
    let out = ok(&virtctl(k, &["soft-reboot", "demo"]));
    assert_eq!(out.trim(), "VMI demo was scheduled to soft reboot");
    let console = Console::attach(k);
    eventually("the guest booted twice", || {
        (console.text().matches("demo-vm# ").count() >= 1
            && console
                .text()
                .matches("cloud-init: hostname demo-vm")
                .count()
                >= 2)
            .then_some(())
    });
    drop(console);
    assert_eq!(running_uid(k).as_deref(), Some(third.as_str()));

    // expose: a Service selecting the VM template's labels.
    let out = ok(&virtctl(
        k,
        &[
            "expose",
            "vm",
            "demo",
            "--name",
            "demo-http",
            "--port",
            "80",
        ],
    ));
    assert_eq!(
        out.trim(),
        "Service demo-http successfully exposed for vm demo"
    );
    assert_eq!(
        jsonpath(k, "service/demo-http", "{.spec.selector.app}"),
        "demo"
    );
    assert_eq!(
        jsonpath(k, "service/demo-http", "{.spec.ports[0].port}"),
        "80"
    );

    // start --paused: the new VMI's vCPUs are paused as soon as it runs; unpause lets it go.
    ok(&virtctl(k, &["stop", "demo"]));
    eventually("the VM Stopped", || {
        (vm_status(k) == "Stopped").then_some(())
    });
    ok(&virtctl(k, &["start", "demo", "--paused"]));
    eventually("the VM started Paused", || {
        (vm_status(k) == "Paused").then_some(())
    });
    assert_eq!(jsonpath(k, "vmi/demo", "{.spec.startStrategy}"), "Paused");
    ok(&virtctl(k, &["unpause", "vm", "demo"]));
    eventually("the VM Running after unpause", || {
        (vm_status(k) == "Running").then_some(())
    });

    // create vm | kubectl apply.
    let manifest = ok(&virtctl(
        k,
        &[
            "create",
            "vm",
            "--name=created",
            "--run-strategy=Halted",
            "--volume-containerdisk",
            &format!("src:{image}"),
        ],
    ));
    ok(&kubectl(k, &["apply", "-f", "-"], Some(&manifest)));
    assert_eq!(jsonpath(k, "vm/created", "{.spec.runStrategy}"), "Halted");
    eventually("the created VM Stopped", || {
        (jsonpath(k, "vm/created", "{.status.printableStatus}") == "Stopped").then_some(())
    });
    let o = virtctl(
        k,
        &["expose", "vm", "created", "--name", "x", "--port", "80"],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("cannot expose VirtualMachine without any label: created"),
        "{o:?}"
    );
    drop(plane);
}

/// `create vm --instancetype u1.nano --preference alpine` as a VM that runs: upstream's common
/// bundles applied with kubectl, the VMI sized by the instancetype and completed by the
/// preference, both pinned by ControllerRevisions so editing the instancetype later changes no
/// existing VM (a restart keeps the pinned size).
#[test]
fn an_instancetype_sizes_the_vmi_pinned_by_a_controller_revision() {
    let dir = tempdir("virtctl-instancetype");
    let image = demo_image(&dir);
    let plane = Plane::start(&dir, Profile::Debug);
    let k = plane.kubeconfig();
    for bundle in [
        "kubevirt-common-clusterinstancetypes-bundle.yaml",
        "kubevirt-common-clusterpreferences-bundle.yaml",
    ] {
        let path = kubevirt_testsupport::fixture(bundle);
        ok(&kubectl(k, &["apply", "-f", path.to_str().unwrap()], None));
    }
    let manifest = ok(&virtctl(
        k,
        &[
            "create",
            "vm",
            "--name=sized",
            "--instancetype=u1.nano",
            "--preference=alpine",
        ],
    ));
    let mut vm: serde_json::Value = serde_saphyr::from_str(&manifest).unwrap();
    // The demo guest boots from a kernel in its image (create vm has no flag for that).
    vm["spec"]["template"]["spec"]["domain"]["firmware"] = serde_json::json!({"kernelBoot":
        {"container": {"image": image, "kernelPath": "/boot/demo.elf"}}});
    vm["spec"]["template"]["spec"]["domain"]["devices"] =
        serde_json::json!({"autoattachPodInterface": false});
    vm["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = serde_json::json!(5);
    ok(&kubectl(k, &["apply", "-f", "-"], Some(&vm.to_string())));

    let vmi_size = || {
        jsonpath(
            k,
            "vmi/sized",
            "{.spec.domain.cpu.sockets} {.spec.domain.memory.guest} {.spec.domain.devices.rng}",
        )
    };
    let uid = |k: &Path| {
        let s = jsonpath(k, "vmi/sized", "{.metadata.uid} {.status.phase}");
        let (u, p) = s.split_once(' ')?;
        (p == "Running").then(|| u.to_string())
    };
    let first = eventually("the sized VMI Running", || uid(k));
    assert_eq!(vmi_size(), "1 512Mi {}");
    let revision = jsonpath(
        k,
        "vm/sized",
        "{.status.instancetypeRef.controllerRevisionRef.name}",
    );
    assert!(revision.starts_with("sized-u1.nano-"), "{revision}");
    ok(&kubectl(k, &["get", "controllerrevision", &revision], None));
    let pref = jsonpath(
        k,
        "vm/sized",
        "{.status.preferenceRef.controllerRevisionRef.name}",
    );
    assert!(pref.starts_with("sized-alpine-"), "{pref}");

    // Editing the instancetype does not resize the VM: its revision is pinned.
    ok(&kubectl(
        k,
        &[
            "patch",
            "virtualmachineclusterinstancetype",
            "u1.nano",
            "--type=merge",
            "-p",
            r#"{"spec":{"memory":{"guest":"1Gi"}}}"#,
        ],
        None,
    ));
    ok(&virtctl(k, &["restart", "sized"]));
    eventually("a new sized VMI Running", || uid(k).filter(|u| *u != first));
    assert_eq!(vmi_size(), "1 512Mi {}");
    drop(plane);
}
