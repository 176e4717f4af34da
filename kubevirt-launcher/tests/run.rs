//! `kubevirt-launcher run` end to end: a VMI whose kernelBoot image is a local OCI layout holding a
//! PVH test guest boots on kubevirt-vmm with a cloud-init disk and an emptyDisk attached through
//! virtio-blk, powers off through ACPI, and the launcher reports Succeeded; an unsupported spec is
//! refused with its paths and exit code 2.

mod common;

use common::{ImageBlobs, Launcher, demo_image, demo_vmi, run_command, tempdir};
use kubevirt_launcher_protocol::{ExitStatus, FinalStatus};
use kubevirt_vmm::acpi::RSDP_ADDR;
use kubevirt_vmm::testguest::{elf, programs};
use std::path::Path;
use std::process::Command;

fn launcher(dir: &Path, vmi: &str) -> std::process::Output {
    run_command(dir, vmi, &[])
        .arg("--quiet")
        .output()
        .expect("run kubevirt-launcher")
}

#[test]
fn a_kernel_boot_vmi_runs_to_power_off() {
    let dir = tempdir("boot");
    let guest = elf::pvh_elf(&programs::acpi_poweroff(RSDP_ADDR).expect("guest")).expect("pvh elf");
    ImageBlobs::with(&[("boot/guest.elf", &guest)]).write_layout(&dir.join("image"), "demo");
    let vmi = format!(
        r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: demo, namespace: default}}
spec:
  domain:
    memory: {{guest: 64Mi}}
    firmware:
      kernelBoot: {{container: {{image: "oci:{}:demo", kernelPath: /boot/guest.elf}}}}
    devices:
      autoattachPodInterface: false
      disks:
      - {{name: scratch, disk: {{bus: virtio}}, serial: SCRATCH}}
  volumes:
  - {{name: scratch, emptyDisk: {{capacity: 8Mi}}}}
  - {{name: cloudinit, cloudInitNoCloud: {{userData: "#cloud-config\nhostname: demo\n"}}}}
"##,
        dir.join("image").display()
    );
    let out = launcher(&dir, &vmi);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "launcher failed: {err}");
    assert!(err.contains("demo: the VMI ended phase=Succeeded"), "{err}");
    assert!(
        !dir.join("run/ephemeral").exists(),
        "ephemeral disks are removed with the VMI"
    );
}

/// A guest that crashes (an invalid opcode with no handler: a triple fault) ends the VMI
/// Failed, with the reason on stderr and exit code 1; its serial console log
/// (`logSerialConsole`) stays in the run directory.
#[test]
fn a_crashing_guest_is_failed_with_a_reason_and_exit_code_1() {
    let dir = tempdir("crash");
    let guest = elf::pvh_elf(&programs::invalid_opcode().expect("guest")).expect("pvh elf");
    ImageBlobs::with(&[("boot/guest.elf", &guest)]).write_layout(&dir.join("image"), "crash");
    let vmi = format!(
        r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: crasher, namespace: default}}
spec:
  domain:
    memory: {{guest: 64Mi}}
    firmware:
      kernelBoot: {{container: {{image: "oci:{}:crash", kernelPath: /boot/guest.elf}}}}
    devices:
      autoattachPodInterface: false
      logSerialConsole: true
"##,
        dir.join("image").display()
    );
    let out = launcher(&dir, &vmi);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("crasher: the VMI ended phase=Failed"), "{err}");
    assert!(
        err.contains("triple-faulted at RIP"),
        "the reason names the crash: {err}"
    );
    assert!(
        dir.join("run/console.log").exists(),
        "logSerialConsole keeps a log"
    );
    // The same verdict, for the node agent, in the run directory.
    let last = FinalStatus::read(&dir.join("run"))
        .unwrap()
        .expect("final.json");
    assert_eq!(last.exit, ExitStatus::Failed);
    assert!(
        last.reason
            .as_deref()
            .unwrap_or_default()
            .contains("triple-faulted at RIP"),
        "{last:?}"
    );
}

/// Mapped fields reach the guest, not just the plan: a VMI with memory only in
/// `resources.requests` and two sockets boots; `bootOrder` puts the scratch disk first (vda);
/// a claim attached with `readonly: true` is read-only to the guest and unchanged on the host.
#[test]
fn mapped_fields_reach_the_running_guest() {
    let dir = tempdir("wiring");
    let image = demo_image(&dir);
    let claim = dir.join("volumes/data/disk.img");
    std::fs::create_dir_all(claim.parent().unwrap()).unwrap();
    let content = vec![0x5au8; 4 << 20];
    std::fs::write(&claim, &content).unwrap();
    let vmi = format!(
        r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: wiring, namespace: default}}
spec:
  domain:
    cpu: {{sockets: 2, cores: 1, threads: 1}}
    resources: {{requests: {{memory: 64Mi}}}}
    firmware:
      kernelBoot: {{container: {{image: "{image}", kernelPath: /boot/demo.elf}}}}
    devices:
      autoattachPodInterface: false
      disks:
      - {{name: data, disk: {{bus: virtio, readonly: true}}}}
      - {{name: scratch, disk: {{bus: virtio}}, serial: FIRST, bootOrder: 1}}
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data-claim}}}}
  - {{name: scratch, emptyDisk: {{capacity: 16Mi}}}}
"##
    );
    let mut launcher = Launcher::spawn(run_command(&dir, &vmi, &[]));
    let out = launcher.expect("demo# ");
    assert!(
        out.contains("vda: 16777216 bytes, serial FIRST"),
        "bootOrder 1 is vda: {out}"
    );
    assert!(
        out.contains("vdb: 4194304 bytes, read-only"),
        "the claim is read-only: {out}"
    );
    launcher.type_text("disktest\r");
    launcher.expect("vdb: read-only, skipped");
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
    assert_eq!(
        std::fs::read(&claim).unwrap(),
        content,
        "the read-only claim is unchanged"
    );
}

/// `firmware.kernelBoot` in full: the kernel and the initrd come out of the container image
/// and the kernel arguments with them; the demo guest prints what the PVH start info gave it.
#[test]
fn kernel_boot_passes_the_initrd_and_the_kernel_arguments() {
    let dir = tempdir("initrd");
    let guest = kubevirt_demo_guest::pvh_elf().expect("demo guest");
    let initrd = b"INITRD!!kubevirt-rs test initrd".repeat(100);
    ImageBlobs::with(&[("boot/demo.elf", &guest), ("boot/initrd.img", &initrd)])
        .write_layout(&dir.join("image"), "demo");
    let vmi = format!(
        r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: kb, namespace: default}}
spec:
  domain:
    memory: {{guest: 64Mi}}
    firmware:
      kernelBoot:
        kernelArgs: "console=ttyS0 kubevirt.marker=42"
        container:
          image: "oci:{}:demo"
          kernelPath: /boot/demo.elf
          initrdPath: /boot/initrd.img
    devices: {{autoattachPodInterface: false}}
"##,
        dir.join("image").display()
    );
    let mut launcher = Launcher::spawn(run_command(&dir, &vmi, &[]));
    let out = launcher.expect("demo# ");
    assert!(
        out.contains(r#"boot: cmdline "console=ttyS0 kubevirt.marker=42""#),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "boot: initrd {} bytes, starts \"INITRD!!\"",
            initrd.len()
        )),
        "{out}"
    );
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
}

#[test]
fn unsupported_specs_are_refused_with_paths() {
    let dir = tempdir("refuse");
    let vmi = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: x}\nspec:\n  domain:\n    memory: {guest: 64Mi}\n    devices:\n      gpus: [{name: g, deviceName: nvidia.com/x}]\n";
    let out = launcher(&dir, vmi);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.domain.devices.gpus: not supported"),
        "{err}"
    );
    assert!(
        !err.contains("spec.domain.firmware"),
        "no kernelBoot is a firmware boot, not an error: {err}"
    );
    let last = FinalStatus::read(&dir.join("run"))
        .unwrap()
        .expect("final.json");
    assert_eq!(last.exit, ExitStatus::Invalid);
    assert!(
        last.reason
            .as_deref()
            .unwrap_or_default()
            .contains("spec.domain.devices.gpus"),
        "{last:?}"
    );
}

/// `examples/vmi-demo.yaml` as shipped (only the image directory moved), with the image the
/// demo guest's image tool writes: the demo guest prints its banner, its disks and the
/// cloud-init data; what is typed on the launcher's stdin reaches its console; `poweroff` ends
/// it and the launcher reports Succeeded.
#[test]
fn the_shipped_demo_vmi_boots_and_answers_the_keyboard() {
    let dir = tempdir("demo");
    let image = dir.join("image");
    kubevirt_demo_guest::write_image(&image).expect("write the demo image");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vmi-demo.yaml"),
    )
    .unwrap();
    let vmi = shipped.replace(
        "oci:target/demo-image:demo",
        &format!("oci:{}:demo", image.display()),
    );
    let file = dir.join("vmi.yaml");
    std::fs::write(&file, vmi).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"));
    cmd.args(["run", file.to_str().unwrap()])
        .args(["--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()]);
    let mut launcher = Launcher::spawn(cmd);
    let out = launcher.expect("demo# ");
    assert!(out.contains(kubevirt_demo_guest::BANNER), "{out}");
    assert!(
        out.contains("vda: 16777216 bytes, serial DEMO-SCRATCH"),
        "{out}"
    );
    assert!(
        out.contains("cloud-init: NoCloud data source on vdb"),
        "{out}"
    );
    assert!(out.contains("  | hostname: demo"), "{out}");
    assert!(
        out.contains("virtio-rng present"),
        "devices.rng attaches virtio-rng: {out}"
    );
    assert!(
        out.contains(
            "smbios: KubeVirt system, uuid 5e6a2b10-3f7e-4f57-9d55-1b2b1f0c9a11, serial DEMO-0001"
        ),
        "firmware uuid and serial reach the guest through SMBIOS: {out}"
    );
    launcher.type_text("uname\r");
    launcher.expect("kubevirt-rs-demo demo 1.0 x86_64");
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
    assert!(out.contains("demo: the VMI ended phase=Succeeded"), "{out}");
}

/// The masquerade binding rebuilds the network namespace it runs in, so the launcher refuses
/// the pod network unless told it is in the pod's (or a scratch) namespace.
#[test]
fn the_pod_network_needs_consent() {
    let dir = tempdir("consent");
    let vmi = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: x}\nspec:\n  domain:\n    memory: {guest: 64Mi}\n    firmware: {kernelBoot: {container: {image: \"oci:/nonexistent:x\", kernelPath: /k}}}\n    devices: {interfaces: [{name: default, masquerade: {}}]}\n  networks: [{name: default, pod: {}}]\n";
    let out = launcher(&dir, vmi);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.domain.devices.interfaces[0]: the masquerade binding rebuilds"),
        "{err}"
    );
    assert!(err.contains("--pod-network"), "{err}");
}

/// SIGTERM is a graceful shutdown: the launcher presses the ACPI power button, the demo guest
/// (which polls the GED register) powers off through S5, and the VMI ends Succeeded well
/// inside its grace period.
#[test]
fn sigterm_presses_the_power_button_and_the_guest_powers_off() {
    let dir = tempdir("sigterm");
    let image = demo_image(&dir);
    let vmi = demo_vmi(
        "graceful",
        &image,
        "16Mi",
        "autoattachPodInterface: false",
        "terminationGracePeriodSeconds: 120",
    );
    let cmd = run_command(&dir, &vmi, &[]);
    let mut launcher = Launcher::spawn(cmd);
    launcher.expect("demo# ");
    let t = std::time::Instant::now();
    launcher.signal(libc::SIGTERM);
    launcher.expect("power button pressed: shutting down");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("graceful: the VMI ended phase=Succeeded reason=the guest powered off"),
        "{out}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(60), "{out}");
}

/// `autoattachSerialConsole: false`: the guest gets no serial port, so nothing it prints
/// reaches the console or its log; it still runs and shuts down on SIGTERM.
#[test]
fn without_a_serial_console_the_guest_runs_silently() {
    let dir = tempdir("noserial");
    let image = demo_image(&dir);
    let vmi = demo_vmi(
        "silent",
        &image,
        "16Mi",
        "autoattachPodInterface: false\nautoattachSerialConsole: false\nlogSerialConsole: true",
        "",
    );
    let mut launcher = Launcher::spawn(run_command(&dir, &vmi, &[]));
    launcher.expect("silent: the VM runs phase=Running");
    // Give the guest the time it needs to print its banner, were there a port to print on.
    std::thread::sleep(std::time::Duration::from_millis(500));
    launcher.signal(libc::SIGTERM);
    let t = std::time::Instant::now();
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("silent: the VMI ended phase=Succeeded reason=the guest powered off"),
        "{out}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "the guest heard the power button: {out}"
    );
    assert!(!out.contains(kubevirt_demo_guest::BANNER), "{out}");
    let log = std::fs::read(dir.join("run/console.log")).unwrap_or_default();
    assert!(log.is_empty(), "{}", String::from_utf8_lossy(&log));
}

/// The node agent's mode: the VMI exactly as the API server returns it (JSON, with server-set
/// metadata and status), read from stdin, paths prepared beside it, no console echo.
#[test]
fn a_vmi_as_the_api_serves_it_runs_from_stdin() {
    let dir = tempdir("api-json");
    let guest = elf::pvh_elf(&programs::acpi_poweroff(RSDP_ADDR).expect("guest")).expect("pvh elf");
    ImageBlobs::with(&[("boot/guest.elf", &guest)]).write_layout(&dir.join("image"), "demo");
    let json = serde_json::json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": "from-api", "namespace": "default",
            "uid": "6a1c0b5e-3f7e-4f57-9d55-1b2b1f0c9a11", "resourceVersion": "4711",
            "generation": 1, "creationTimestamp": "2026-11-28T04:00:00Z",
            "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"],
            "labels": {"kubevirt.io/nodeName": "local"}
        },
        "spec": {
            "domain": {
                "memory": {"guest": "32Mi"},
                "firmware": {"kernelBoot": {"container": {
                    "image": format!("oci:{}:demo", dir.join("image").display()),
                    "kernelPath": "/boot/guest.elf"}}},
                "devices": {"autoattachPodInterface": false}
            }
        },
        "status": {"phase": "Scheduled", "nodeName": "local"}
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"))
        .args(["run", "--quiet", "--vmi", "-"])
        .args(["--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        json.to_string().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("from-api: the VMI ended phase=Succeeded"),
        "{err}"
    );
}

/// A guest reboot does not end the VMI: the launcher starts a fresh VM over the same disks and
/// console, as QEMU resets in place upstream. The control socket's `reset` restarts at once and
/// `softReboot` presses the power button and restarts when the guest powers off; the VMI stays
/// Running throughout and ends Succeeded at the final power-off.
#[test]
fn reboots_resets_and_soft_reboots_keep_the_vmi_running() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempdir("reboot");
    let image = demo_image(&dir);
    let vmi = demo_vmi(
        "rebooter",
        &image,
        "16Mi",
        "autoattachPodInterface: false",
        "",
    );
    let cmd = run_command(&dir, &vmi, &[]);
    let mut launcher = Launcher::spawn(cmd);
    let banners = |out: &str| out.matches(kubevirt_demo_guest::BANNER).count();
    launcher.expect("demo# ");

    let control = std::os::unix::net::UnixStream::connect(dir.join("run/control.sock")).unwrap();
    let mut reader = BufReader::new(control.try_clone().unwrap());
    let mut ask = |req: &str| {
        writeln!(&control, "{req}").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };

    // The guest reboots itself (ACPI reset register).
    launcher.type_text("reboot\r");
    launcher.expect("rebooting");
    let wait_banners = |launcher: &mut Launcher, n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let out = launcher.expect("demo# ");
            if banners(&out) >= n
                && out
                    .rsplit(kubevirt_demo_guest::BANNER)
                    .next()
                    .unwrap()
                    .contains("demo# ")
            {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no boot #{n}:\n{out}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_banners(&mut launcher, 2);
    let status = ask(r#"{"op":"status"}"#);
    assert_eq!(
        (status["phase"].as_str(), status["restarts"].as_u64()),
        (Some("Running"), Some(1)),
        "{status}"
    );

    // A hard reset from the control socket.
    assert_eq!(ask(r#"{"op":"reset"}"#)["ok"], true);
    wait_banners(&mut launcher, 3);

    // A soft reboot: the guest sees the power button, powers off, and is started again.
    assert_eq!(ask(r#"{"op":"softReboot"}"#)["ok"], true);
    launcher.expect("power button pressed: shutting down");
    wait_banners(&mut launcher, 4);
    let status = ask(r#"{"op":"status"}"#);
    assert_eq!(
        (status["phase"].as_str(), status["restarts"].as_u64()),
        (Some("Running"), Some(3)),
        "{status}"
    );

    // Commands still reach the current guest; its power-off ends the VMI.
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("rebooter: the VMI ended phase=Succeeded reason=the guest powered off"),
        "{out}"
    );
}
