//! `/metrics` of `kubevirt-controller run` and `node` (the binaries, `--metrics-listen`)
//! against the local API server: the controller counts the VMIs per node and phase and reports
//! a VM's requests; the node agent (direct mode) boots the demo guest on the pod network and
//! its per-VMI series come from the launcher — the vCPU's CPU time grows, and pinging the guest
//! from inside its network namespace moves the NIC's receive and transmit bytes. Of two
//! operator replicas (serving HTTPS), the one holding Lease `virt-operator` reports leading,
//! both ready.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Cluster, eventually};
use kubevirt_testsupport::{Profile, demo_image, demo_vmi, find_file, launcher_binary};

/// A VM that stays halted: the controller reports what it asks for.
const HALTED: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: sized}
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        cpu: {cores: 2}
        memory: {guest: 96Mi}
        resources: {requests: {cpu: 500m}}
        devices: {}
";

/// A child binary, stopped with SIGTERM (and reaped) on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the child this test spawned and has not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts `kubevirt-controller ARGS --metrics-listen 127.0.0.1:0` and returns it with the URL
/// of the metrics it prints.
fn start(args: &[&str]) -> (Daemon, String) {
    start_with(args, &[])
}

/// [`start`] with environment variables.
fn start_with(args: &[&str], env: &[(&str, &str)]) -> (Daemon, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .args(args)
        .envs(env.iter().copied())
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-controller");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let daemon = Daemon(child);
    let url = loop {
        let line = lines
            .next()
            .expect("a metrics line before stdout ends")
            .unwrap();
        if let Some(url) = line.strip_prefix("kubevirt-controller: metrics on ") {
            break url.to_string();
        }
    };
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (daemon, url)
}

/// One scrape: the headers and the body.
fn scrape(url: &str) -> (String, String) {
    let o = Command::new("curl")
        // The operator's endpoint serves a self-signed certificate.
        .args(["-sS", "-i", "-k", "--max-time", "10", url])
        .output()
        .expect("run curl");
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("headers and body");
    (head.to_string(), body.to_string())
}

/// The value of the one sample of `name` whose labels contain every one of `labels`.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_and_node_agent_metrics_have_upstreams_names_and_real_numbers() {
    let c = Cluster::start(true).await;
    let work = kubevirt_testsupport::tempdir("metrics");
    let dir = work.path().to_path_buf();
    let (launcher, image) = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || (launcher_binary(Profile::Debug), demo_image(&dir))
    })
    .await
    .unwrap();
    let k = c.kubeconfig.to_str().unwrap().to_string();
    let (run_root, cache, volumes) = (dir.join("run"), dir.join("cache"), dir.join("volumes"));
    let node_args = [
        "node",
        "--kubeconfig",
        &k,
        "--node-name",
        "local",
        "--launcher",
        launcher.to_str().unwrap(),
        "--run-root",
        run_root.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--volumes-dir",
        volumes.to_str().unwrap(),
        "--no-device-plugins",
    ]
    .map(String::from);
    let (controller, node) = tokio::task::spawn_blocking({
        let k = k.clone();
        move || {
            let args: Vec<&str> = node_args.iter().map(String::as_str).collect();
            (start(&["run", "--kubeconfig", &k]), start(&args))
        }
    })
    .await
    .unwrap();
    let ((_controller, controller_url), (_node, node_url)) = (controller, node);

    let (ok, _, err) = c
        .kubectl(&["apply", "-f", "-"], Some(&demo_vmi("demo", &image, true)))
        .await;
    assert!(ok, "{err}");
    let (ok, _, err) = c.kubectl(&["apply", "-f", "-"], Some(HALTED)).await;
    assert!(ok, "{err}");
    eventually("the demo VMI Running", || async {
        let (_, out, _) = c
            .kubectl(&["get", "vmi/demo", "-o", "jsonpath={.status.phase}"], None)
            .await;
        (out == "Running").then_some(())
    })
    .await;

    // The controller: VMIs per node and phase, the VM's requests, its own status.
    let (head, body) = scrape(&controller_url);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE kubevirt_vmi_phase_count gauge\n"),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "kubevirt_vmi_phase_count",
            &["node=\"local\"", "phase=\"running\"", "os=\"<none>\""]
        ),
        Some(1.0),
        "{body}"
    );
    let requests = |labels: &[&str]| {
        let mut all = vec!["name=\"sized\"", "namespace=\"default\""];
        all.extend_from_slice(labels);
        sample(&body, "kubevirt_vm_resource_requests", &all)
    };
    assert_eq!(
        requests(&["unit=\"bytes\"", "source=\"guest\""]),
        Some(96.0 * 1048576.0)
    );
    assert_eq!(
        requests(&["unit=\"cores\"", "source=\"requests\""]),
        Some(0.5)
    );
    assert_eq!(
        requests(&["unit=\"cores\"", "source=\"domain\""]),
        Some(2.0)
    );
    assert!(
        body.contains("\nkubevirt_virt_controller_leading_status 1\n"),
        "{body}"
    );

    // The node agent: the launcher's numbers, once the guest took its address by DHCP.
    let who = "name=\"demo\"";
    let first = eventually("the NIC has carried DHCP", || async {
        let (_, body) = scrape(&node_url);
        let rx = sample(
            &body,
            "kubevirt_vmi_network_receive_bytes_total",
            &[who, "interface=\"default\""],
        )?;
        let tx = sample(
            &body,
            "kubevirt_vmi_network_transmit_bytes_total",
            &[who, "interface=\"default\""],
        )?;
        (rx > 0.0 && tx > 0.0).then_some(body)
    })
    .await;
    let value = |body: &str, name: &str, labels: &[&str]| {
        let mut all = vec![who, "node=\"local\"", "namespace=\"default\""];
        all.extend_from_slice(labels);
        sample(body, name, &all).unwrap_or_else(|| panic!("{name} {labels:?} in\n{body}"))
    };
    let rss = value(&first, "kubevirt_vmi_memory_resident_bytes", &[]);
    assert!(rss > 4.0 * 1048576.0, "resident {rss}");
    assert_eq!(
        value(&first, "kubevirt_vmi_memory_domain_bytes", &[]),
        64.0 * 1048576.0
    );
    let read = value(
        &first,
        "kubevirt_vmi_storage_read_traffic_bytes_total",
        &["drive=\"cloudinit\""],
    );
    assert!(read > 0.0, "the guest read its cloud-init disk: {read}");
    let vcpu = |body: &str| {
        value(
            body,
            "kubevirt_vmi_vcpu_seconds_total",
            &["id=\"0\"", "state=\"running\""],
        )
    };
    let net = |body: &str, dir: &str| {
        value(
            body,
            &format!("kubevirt_vmi_network_{dir}_bytes_total"),
            &["interface=\"default\""],
        )
    };

    // Traffic: 300 pings of 1000 bytes from inside the launcher's network namespace.
    let pid = std::fs::read_to_string(find_file(&run_root, "launcher.pid").expect("launcher.pid"))
        .unwrap();
    let ping = tokio::task::spawn_blocking(move || {
        Command::new("nsenter")
            .args([
                "-t",
                pid.trim(),
                "-n",
                "ping",
                "-q",
                "-c",
                "300",
                "-i",
                "0.01",
                "-s",
                "1000",
                "-W",
                "2",
                "10.0.2.2",
            ])
            .output()
            .expect("run nsenter ping")
    })
    .await
    .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    let (_, second) = scrape(&node_url);
    let (rx, tx) = (
        net(&second, "receive") - net(&first, "receive"),
        net(&second, "transmit") - net(&first, "transmit"),
    );
    let cpu = vcpu(&second) - vcpu(&first);
    eprintln!(
        "metrics: rss {rss} B, cloud-init read {read} B; after 300 pings: rx +{rx} B, tx +{tx} B, vcpu0 +{cpu} s (from {} s)",
        vcpu(&first)
    );
    assert!(rx >= 300.0 * 1000.0, "receive grew by {rx}");
    assert!(tx >= 300.0 * 1000.0, "transmit grew by {tx}");
    assert!(cpu > 0.0, "vcpu0 ran {cpu} s more");
    let packets = value(
        &second,
        "kubevirt_vmi_network_receive_packets_total",
        &["interface=\"default\""],
    );
    assert!(packets >= 300.0, "{packets}");

    let (ok, _, err) = c
        .kubectl(
            &["delete", "vmi/demo", "--wait=true", "--timeout=60s"],
            None,
        )
        .await;
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_replica_holding_the_lease_reports_leading() {
    let c = Cluster::start(true).await;
    let (ok, _, err) = c.kubectl(&["create", "namespace", "kubevirt"], None).await;
    assert!(ok, "{err}");
    let k = c.kubeconfig.to_str().unwrap().to_string();
    // Over HTTPS, as upstream serves its metrics.
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_file, key_file) = (c.dir.join("metrics.crt"), c.dir.join("metrics.key"));
    std::fs::write(&cert_file, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    let tls = [cert_file, key_file].map(|p| p.to_str().unwrap().to_string());
    let replica = |name: &'static str| {
        let (k, tls) = (k.clone(), tls.clone());
        tokio::task::spawn_blocking(move || {
            start_with(
                &[
                    "operator",
                    "--kubeconfig",
                    &k,
                    "--metrics-tls-cert-file",
                    &tls[0],
                    "--metrics-tls-key-file",
                    &tls[1],
                ],
                &[
                    ("WATCH_NAMESPACE", "kubevirt"),
                    ("VIRT_OPERATOR_IMAGE", "127.0.0.1:5000/virt-operator:v0.1.0"),
                    ("POD_NAME", name),
                ],
            )
        })
    };
    let (_first, first) = replica("virt-operator-a").await.unwrap();
    assert!(first.starts_with("https://127.0.0.1:"), "{first}");
    let leading = |url: &str| {
        let (_, body) = scrape(url);
        let bit = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .map(str::to_string)
        };
        (
            bit("kubevirt_virt_operator_leading_status"),
            bit("kubevirt_virt_operator_ready_status"),
        )
    };
    eventually("replica a leads", || async {
        (leading(&first) == (Some("1".into()), Some("1".into()))).then_some(())
    })
    .await;
    let (_second, second) = replica("virt-operator-b").await.unwrap();
    assert_eq!(leading(&second), (Some("0".into()), Some("1".into())));
    assert_eq!(leading(&first).0.as_deref(), Some("1"));
}
