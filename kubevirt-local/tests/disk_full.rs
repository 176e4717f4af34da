//! A full disk end to end, as a user sees it on `kubevirt-local up` with its kubelet (the VMIs
//! run in their virt-launcher pods): two VMs, each with its one writable disk on a claim whose
//! local PV is a 1 MiB tmpfs the test fills on the host.
//!
//! - `full` keeps upstream's default `errorPolicy: stop`: the guest's `disktest` write fails with
//!   ENOSPC, the VM pauses; `kubectl get vmi` shows the `Paused` condition with reason
//!   `PausedIOError` (upstream's words), `kubectl get vm` prints `Paused`, a Warning `IOerror`
//!   event names the volume, and the guest's vCPUs are really stopped (it echoes nothing typed
//!   on its console). Space freed on the host, `virtctl unpause vmi full` runs the held write
//!   again: the guest reports it written and read back (never an error), the typed `count` runs,
//!   the condition is gone and the marker is in the disk image.
//! - `report` says `errorPolicy: report`: the guest sees the I/O error (its `disktest` prints
//!   FAILED), the VM keeps Running with no `Paused` condition, and the guest goes on answering.
//!
//! Deleting both VMs leaves nothing on the host; the test unmounts its tmpfs mounts itself, also
//! when it fails. Needs root, the node packages (see `common::node`) and /dev/kvm.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::node::*;
use kubevirt_testsupport::{Profile, demo_image, launcher_binary, tempdir};
use serde_json::Value;

const NODE: &str = "kv-disk-full";
/// What the guest's `disktest` prints when its write, flush and read-back all worked.
const WRITTEN: &str = "vda: wrote sector 1, flushed, read it back: ok";
/// ... and when one of them failed.
const FAILED: &str = "vda: write/flush/read-back of sector 1 FAILED";

/// A 1 MiB tmpfs, unmounted when dropped (lazily if something still holds it, so a failed test
/// leaves no mount behind).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }

    /// A sparse 4 MiB `disk.img` (what CDI would have left in the claim) and a filler file that
    /// takes every free block.
    fn fill(&self) {
        std::fs::File::create(self.0.join("disk.img"))
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        // The write stops at ENOSPC: the file system is full.
        let _ = std::fs::write(self.filler(), vec![1u8; 1 << 20]);
        let probe = std::fs::write(self.0.join("probe"), [1u8; 4096]);
        assert!(probe.is_err(), "{} is not full", self.0.display());
    }

    fn filler(&self) -> PathBuf {
        self.0.join("filler")
    }

    /// Unmounts it now: nothing may hold it any more.
    fn unmount(&self) -> Output {
        Command::new("umount")
            .arg(&self.0)
            .output()
            .expect("umount")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if mounted(&self.0) && !self.unmount().status.success() {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Whether `dir` is a mount point now.
fn mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(dir.as_ref()))
}

/// A local PV on `path` (this node only) and the claim `name` bound to it.
fn claim_yaml(name: &str, path: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}-pv
spec:
  capacity: {{storage: 4Mi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local-tmpfs
  volumeMode: Filesystem
  local: {{path: {path}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [{NODE}]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: local-tmpfs
  volumeName: {name}-pv
  resources: {{requests: {{storage: 4Mi}}}}
"#,
        path = path.display()
    )
}

/// The demo guest as VM `name` whose disk `data` is the claim `name`, with `policy` as its
/// `errorPolicy` (none: upstream's default, `stop`).
fn vm_yaml(name: &str, image: &str, policy: Option<&str>) -> String {
    let policy = policy
        .map(|p| format!("\n            errorPolicy: {p}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  runStrategy: Always
  template:
    spec:
      terminationGracePeriodSeconds: 5
      domain:
        memory: {{guest: 64Mi}}
        firmware:
          kernelBoot:
            container: {{image: "{image}", kernelPath: /boot/demo.elf}}
            kernelArgs: console=ttyS0
        devices:
          autoattachPodInterface: false
          disks:
          - name: data
            disk: {{bus: virtio}}{policy}
      volumes:
      - name: data
        persistentVolumeClaim: {{claimName: {name}}}
"#
    )
}

/// `kubectl get KIND NAME -o jsonpath=PATH`.
fn jsonpath(up: &Up, kind: &str, name: &str, path: &str) -> String {
    up.ok(
        &["get", kind, name, "-o", &format!("jsonpath={path}")],
        None,
    )
}

const PAUSED_REASON: &str = r#"{.status.conditions[?(@.type=="Paused")].reason}"#;

/// The STATUS column of `kubectl get vm NAME`.
fn vm_status(up: &Up, name: &str) -> String {
    let table = up.ok(&["get", "vm", name], None);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let at = header
        .iter()
        .position(|h| *h == "STATUS")
        .unwrap_or_else(|| panic!("no STATUS column: {table}"));
    row.get(at).map(|s| s.to_string()).unwrap_or_default()
}

/// The Warning events with `reason` about VMI `name`.
fn warnings(up: &Up, name: &str, reason: &str) -> Vec<Value> {
    let events: Value = serde_json::from_str(&up.ok(&["get", "events", "-o", "json"], None))
        .expect("events as JSON");
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["involvedObject"]["kind"] == "VirtualMachineInstance"
                && e["involvedObject"]["name"] == name
                && e["reason"] == reason
                && e["type"] == "Warning"
        })
        .cloned()
        .collect()
}

/// One connection to a guest's serial console, kept for the whole test: everything it printed
/// since, in order.
struct Console {
    stream: UnixStream,
    seen: String,
}

impl Console {
    fn open(socket: &Path) -> Console {
        let stream = eventually("the console socket", 30, || {
            UnixStream::connect(socket).ok()
        });
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Console {
            stream,
            seen: String::new(),
        }
    }

    fn type_text(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    /// What arrives within `wait`.
    fn read_for(&mut self, wait: Duration) -> String {
        let start = Instant::now();
        let mut new = String::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < wait {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => new.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
        }
        self.seen.push_str(&new);
        new
    }

    /// Reads until the output since `from` contains `what`; that output.
    fn expect_since(&mut self, from: usize, what: &str, secs: u64) -> String {
        let start = Instant::now();
        while !self.seen[from..].contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "no {what:?} on the console after {secs} s; it printed:\n{}",
                &self.seen[from..]
            );
            self.read_for(Duration::from_millis(200));
        }
        self.seen[from..].to_string()
    }

    /// Types `command` once the guest shows its prompt; returns where its output starts.
    fn run(&mut self, command: &str) -> usize {
        let from = self.seen.len();
        self.type_text("\r");
        self.expect_since(from, "demo# ", 30);
        let from = self.seen.len();
        self.type_text(&format!("{command}\r"));
        from
    }
}

/// VM `name`'s VMI once Running; its console.
fn running_console(up: &Up, name: &str) -> Console {
    let vmi = eventually(&format!("VMI {name} Running"), 120, || {
        up.get("vmi", name)
            .filter(|v| v["status"]["phase"] == "Running")
    });
    let uid = vmi["metadata"]["uid"].as_str().expect("a uid");
    Console::open(
        &up.data
            .join("node/launchers")
            .join(uid)
            .join("console.sock"),
    )
}

#[test]
fn a_full_disk_pauses_the_vm_with_paused_io_error_until_space_is_freed_and_it_is_unpaused() {
    require_node!();
    let _node = node_slot();
    let started = Instant::now();
    let launcher = launcher_binary(Profile::Debug);
    let dir = tempdir("disk-full-e2e");
    let image = demo_image(&dir);
    let stop_fs = Tmpfs::mount(&dir.join("pv-full"));
    let report_fs = Tmpfs::mount(&dir.join("pv-report"));
    stop_fs.fill();
    report_fs.fill();
    eprintln!("disk_full: starting up after {:?}", started.elapsed());
    let (up, ready) = start_up_node(
        &dir.join("data"),
        NODE,
        &["--launcher", launcher.to_str().unwrap()],
    );
    assert_eq!(ready["vmiLaunchers"], "pods", "{ready}");
    for (name, fs) in [("full", &stop_fs), ("report", &report_fs)] {
        up.ok(&["apply", "-f", "-"], Some(&claim_yaml(name, &fs.0)));
    }
    up.ok(&["apply", "-f", "-"], Some(&vm_yaml("full", &image, None)));
    up.ok(
        &["apply", "-f", "-"],
        Some(&vm_yaml("report", &image, Some("report"))),
    );
    let mut full = running_console(&up, "full");
    let mut report = running_console(&up, "report");
    eprintln!("disk_full: both VMs running after {:?}", started.elapsed());

    // errorPolicy stop (the default): the write of a full disk pauses the VM.
    full.run("disktest");
    let typed = Instant::now();
    eventually(
        "the VMI's Paused condition with reason PausedIOError",
        30,
        || (jsonpath(&up, "vmi", "full", PAUSED_REASON) == "PausedIOError").then_some(()),
    );
    let message = jsonpath(
        &up,
        "vmi",
        "full",
        r#"{.status.conditions[?(@.type=="Paused")].message}"#,
    );
    assert_eq!(message, "VMI was paused, low-level IO error detected");
    assert_eq!(jsonpath(&up, "vmi", "full", "{.status.phase}"), "Running");
    eventually("kubectl get vm printing Paused", 30, || {
        (vm_status(&up, "full") == "Paused").then_some(())
    });
    eventually(
        "the VM's Paused condition with reason PausedIOError",
        30,
        || (jsonpath(&up, "vm", "full", PAUSED_REASON) == "PausedIOError").then_some(()),
    );
    let events = eventually("a Warning IOerror event about the VMI", 30, || {
        Some(warnings(&up, "full", "IOerror")).filter(|e| !e.is_empty())
    });
    assert_eq!(events.len(), 1, "told once: {events:#?}");
    assert_eq!(
        events[0]["message"], "VM Paused due to not enough space on volume: data",
        "{events:#?}"
    );
    // Its vCPUs are stopped: what is typed now is not even echoed.
    full.read_for(Duration::from_millis(500));
    let at_pause = full.seen.len();
    assert!(
        !full.seen.contains(WRITTEN) && !full.seen.contains(FAILED),
        "the guest's write is held, neither done nor failed: {}",
        full.seen
    );
    full.type_text("count\r");
    let quiet = full.read_for(Duration::from_secs(2));
    assert_eq!(quiet, "", "a paused guest printed something");

    eprintln!(
        "disk_full: paused, told and quiet after {:?}",
        started.elapsed()
    );

    // errorPolicy report, meanwhile: the guest sees the error and runs on.
    let from = report.run("disktest");
    report.expect_since(from, FAILED, 30);
    let from = report.run("count");
    report.expect_since(from, "count 1", 10);
    assert_eq!(jsonpath(&up, "vmi", "report", PAUSED_REASON), "");
    assert_eq!(jsonpath(&up, "vmi", "report", "{.status.phase}"), "Running");
    assert_eq!(vm_status(&up, "report"), "Running");
    assert!(warnings(&up, "report", "IOerror").is_empty());

    // Still paused, for longer than the guest's driver waits for a request (5 s of its own
    // time): the held request is one it still waits for when it resumes. Space freed on the
    // host and `virtctl unpause`: the held write completes, then the typed `count` runs.
    if let Some(rest) = Duration::from_secs(7).checked_sub(typed.elapsed()) {
        std::thread::sleep(rest);
    }
    assert_eq!(jsonpath(&up, "vmi", "full", PAUSED_REASON), "PausedIOError");
    std::fs::remove_file(stop_fs.filler()).unwrap();
    let out = up.virtctl(&["unpause", "vmi", "full"]);
    assert!(
        out.status.success(),
        "virtctl unpause: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    full.expect_since(at_pause, "count 1", 30);
    assert!(full.seen.contains(WRITTEN), "{}", full.seen);
    assert!(
        !full.seen.contains(FAILED),
        "the guest saw no error: {}",
        full.seen
    );
    let image_file = std::fs::read(stop_fs.0.join("disk.img")).unwrap();
    let marker = b"kubevirt-rs demo guest wrote this to vda";
    assert_eq!(&image_file[512..512 + marker.len()], marker);
    eventually("the Paused condition gone", 30, || {
        (jsonpath(&up, "vmi", "full", PAUSED_REASON).is_empty()
            && vm_status(&up, "full") == "Running")
            .then_some(())
    });
    assert_eq!(jsonpath(&up, "vm", "full", PAUSED_REASON), "");

    eprintln!(
        "disk_full: unpaused and written after {:?}",
        started.elapsed()
    );

    // Deleting the VMs: their pods go, nothing of them is left on the host, the claims' mounts
    // are the test's own again.
    up.ok(
        &[
            "delete",
            "vm",
            "full",
            "report",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    launcher_pods_gone(&up, 60);
    assert_nothing_left(&up.data);
    eprintln!(
        "disk_full: deleted, nothing left after {:?}",
        started.elapsed()
    );
    drop(up);
    for fs in [&stop_fs, &report_fs] {
        let out = fs.unmount();
        assert!(
            out.status.success(),
            "{} is still held: {}",
            fs.0.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!mounted(&fs.0));
    }
    eprintln!("disk_full end to end: {:?}", started.elapsed());
}
