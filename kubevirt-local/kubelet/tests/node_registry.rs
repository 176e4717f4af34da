//! The node's registry with a real containerd: the pause and launcher images built from this
//! host's busybox and the freshly built kubevirt-launcher, served on loopback, answer the
//! distribution API's pull requests with the right headers; a private containerd (as the
//! kubelet runs it, trusting the registry through `hosts.toml`) pulls the launcher image over
//! CRI and runs `kubevirt-launcher --version` from it. Needs root, containerd, runc and
//! busybox-static.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kubevirt_kubelet::containerd::{ContainerdConfig, Layout, Supervisor};
use kubevirt_kubelet::cri::Cri;
use kubevirt_kubelet::images::local::{LocalImage, digest};
use kubevirt_kubelet::images::served::ServedImage;
use kubevirt_kubelet::images::{NodeRegistry, NodeRegistryConfig, ensure_image};
use kubevirt_testsupport::{Profile, launcher_binary, tempdir};

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (containerd)".into());
    }
    for (path, package) in [
        ("/usr/bin/containerd", "containerd"),
        ("/usr/bin/ctr", "containerd"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/bin/busybox", "busybox-static"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} missing (package {package})"));
        }
    }
    None
}

/// One HTTP/1.0 request; the status, the headers (lowercase names) and the body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn ctr(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("run ctr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_the_launcher_image_from_the_node_registry_and_runs_it() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let launcher = launcher_binary(Profile::Debug);
    let dir = tempdir("node-registry");
    // A user's own layout, served beside the node's images (`--image NAME:TAG=DIR`).
    let extra = LocalImage::new("test/extra", "any")
        .file("/hello", "hi\n", 0o644)
        .unwrap()
        .write_layout(&dir.join("extra"))
        .unwrap();
    let registry = NodeRegistry::start(NodeRegistryConfig {
        listen: None,
        dir: dir.join("registry"),
        busybox: "/usr/bin/busybox".into(),
        launcher: Some(launcher.clone()),
        launcher_tag: "9.9.9".into(),
        // Any ELF stands in for kubevirt-controller here: the image's layout is what is checked.
        importer: Some((launcher.clone(), "/usr/bin/qemu-img".into())),
        images: vec![ServedImage::parse(&format!("test/extra:2={}", extra.dir.display())).unwrap()],
    })
    .await
    .expect("start the node registry");
    let host = registry.host.clone();
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    assert_eq!(registry.pause_image, format!("{host}/kubevirt-rs/pause:1"));
    let launcher_image = registry.launcher_image.clone().expect("a launcher image");
    assert!(
        launcher_image.starts_with(&format!("{host}/kubevirt-rs/virt-launcher:9.9.9@sha256:")),
        "{launcher_image}"
    );
    let importer_image = registry.importer_image.clone().expect("an importer image");
    assert!(
        importer_image.starts_with(&format!("{host}/kubevirt-rs/cdi-importer:9.9.9@sha256:")),
        "{importer_image}"
    );
    assert!(
        registry.images.contains(&format!("{host}/test/extra:2")),
        "{:?}",
        registry.images
    );

    // The distribution API as containerd speaks it.
    let addr = registry.address;
    let (status, headers, _) = tokio::task::spawn_blocking(move || http(addr, "GET", "/v2/"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let manifest_digest = launcher_image.split_once('@').unwrap().1.to_string();
    let probe = move || {
        let by_tag = http(
            addr,
            "HEAD",
            "/v2/kubevirt-rs/virt-launcher/manifests/9.9.9",
        );
        let by_digest = http(
            addr,
            "GET",
            &format!("/v2/kubevirt-rs/virt-launcher/manifests/{manifest_digest}"),
        );
        let missing = http(addr, "GET", "/v2/kubevirt-rs/virt-launcher/manifests/nope");
        let unknown = http(addr, "GET", "/v2/nobody/manifests/1");
        let push = http(addr, "POST", "/v2/kubevirt-rs/virt-launcher/blobs/uploads/");
        (manifest_digest, by_tag, by_digest, missing, unknown, push)
    };
    let (manifest_digest, by_tag, by_digest, missing, unknown, push) =
        tokio::task::spawn_blocking(probe).await.unwrap();
    assert_eq!(by_tag.0, 200);
    assert!(by_tag.2.is_empty(), "HEAD has no body");
    assert_eq!(
        header(&by_tag.1, "content-type"),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(
        header(&by_tag.1, "docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    assert_eq!(by_digest.0, 200);
    assert_eq!(
        digest(&by_digest.2),
        manifest_digest,
        "the body is the digest's"
    );
    assert_eq!(
        header(&by_digest.1, "content-length"),
        Some(by_digest.2.len().to_string().as_str())
    );
    assert_eq!(missing.0, 404);
    assert!(String::from_utf8_lossy(&missing.2).contains("MANIFEST_UNKNOWN"));
    assert_eq!(unknown.0, 404);
    assert!(String::from_utf8_lossy(&unknown.2).contains("NAME_UNKNOWN"));
    assert_eq!(push.0, 405);

    let manifest: serde_json::Value = serde_json::from_slice(&by_digest.2).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layer_size = manifest["layers"][0]["size"].as_u64().unwrap();
    let blob = tokio::task::spawn_blocking(move || {
        http(
            addr,
            "GET",
            &format!("/v2/kubevirt-rs/virt-launcher/blobs/{layer}"),
        )
    })
    .await
    .unwrap();
    assert_eq!(blob.0, 200);
    assert_eq!(blob.2.len() as u64, layer_size);
    assert_eq!(
        header(&blob.1, "content-type"),
        Some("application/octet-stream")
    );

    // A private containerd, configured as the kubelet configures it.
    let layout = Layout::new(dir.join("containerd"));
    ContainerdConfig {
        sandbox_image: registry.pause_image.clone(),
        plain_http_registries: vec![host.clone()],
        ..Default::default()
    }
    .write(&layout)
    .unwrap();
    let supervisor = Supervisor::start(layout.clone(), "containerd".into())
        .await
        .expect("start containerd");
    let socket = supervisor.socket();
    let cri = Cri::connect(&socket).await.expect("CRI");
    let pulled = ensure_image(&cri, &launcher_image, "IfNotPresent").await;
    let pause = ensure_image(&cri, &registry.pause_image, "Always").await;
    let extra_pulled = ensure_image(&cri, &format!("{host}/test/extra:2"), "Always").await;

    // CRI names a `name:tag@digest` pull by its digest alone.
    let stored = format!("{host}/kubevirt-rs/virt-launcher@{manifest_digest}");
    let run = ctr(
        &socket,
        &[
            "run",
            "--rm",
            &stored,
            "node-registry-test",
            "/usr/bin/kubevirt-launcher",
            "--version",
        ],
    );
    let own = Command::new(&launcher).arg("--version").output().unwrap();

    supervisor.stop(true).await;
    registry.stop().await;
    let image_id = pulled.expect("containerd pulls the launcher image over CRI");
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    pause.expect("containerd pulls the pause image");
    extra_pulled.expect("containerd pulls an image named with --image");
    assert!(
        run.status.success(),
        "ctr run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(own.status.success());
    assert_eq!(
        stdout.trim(),
        String::from_utf8_lossy(&own.stdout).trim(),
        "the launcher in the image is the one built"
    );
    assert!(stdout.contains("kubevirt-launcher"), "{stdout}");
}

#[tokio::test]
async fn a_named_layout_that_is_not_one_is_refused_with_its_name() {
    let dir = tempdir("node-registry-bad");
    if !Path::new("/usr/bin/busybox").exists() {
        eprintln!("skipped: /usr/bin/busybox missing (package busybox-static)");
        return;
    }
    let err = NodeRegistry::start(NodeRegistryConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        dir: dir.join("registry"),
        busybox: "/usr/bin/busybox".into(),
        launcher: None,
        launcher_tag: "1".into(),
        importer: None,
        images: vec![ServedImage::parse(&format!("x/y:1={}", dir.join("nope").display())).unwrap()],
    })
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("x/y:1") && text.contains("nope"), "{text}");

    let err = NodeRegistry::start(NodeRegistryConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        dir: dir.join("registry"),
        busybox: dir.join("no-busybox"),
        launcher: None,
        launcher_tag: "1".into(),
        importer: None,
        images: vec![],
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("busybox-static"), "{err}");
}
