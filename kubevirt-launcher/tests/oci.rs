//! containerDisks from a real registry (Debian's docker-registry on loopback) and from a local OCI
//! layout: pulled, digest-verified, cached, extracted read-only, and still usable offline.

use kubevirt_launcher::oci::{ImageRef, Layout, OciError, Registry, Store, fetch_disk};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn digest(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(
        format!(
            "kv-oci-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A containerDisk image: one gzip'd tar layer with `disk/demo.img`.
struct Image {
    disk: Vec<u8>,
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

fn image() -> Image {
    let disk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let mut tar_bytes = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar_bytes);
        let mut header = tar::Header::new_gnu();
        header.set_size(disk.len() as u64);
        header.set_mode(0o444);
        header.set_cksum();
        builder
            .append_data(&mut header, "disk/demo.img", disk.as_slice())
            .unwrap();
        builder.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
    }))
    .unwrap();
    Image {
        disk,
        layer,
        config,
        manifest,
    }
}

fn write_layout(dir: &Path, img: &Image) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for b in [&img.layer, &img.config, &img.manifest] {
        std::fs::write(blobs.join(&digest(b)[7..]), b).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(&img.manifest), "size": img.manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_local_layout_yields_a_verified_read_only_disk() {
    let dir = tempdir("layout");
    let img = image();
    write_layout(&dir.join("layout"), &img);
    let store = Store::new(dir.join("cache"));
    let r: ImageRef = "example.com/demo/disk:v1".parse().unwrap();
    let disk = fetch_disk(&Layout::new(dir.join("layout")), &store, &r, None).expect("fetch");
    assert_eq!(std::fs::read(&disk).unwrap(), img.disk);
    assert!(
        std::fs::metadata(&disk).unwrap().permissions().readonly(),
        "the cached image is never written"
    );
    // A corrupt blob is refused, not used.
    let other = tempdir("corrupt");
    write_layout(&other.join("layout"), &img);
    let layer_path = other
        .join("layout/blobs/sha256")
        .join(&digest(&img.layer)[7..]);
    let mut bad = img.layer.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(layer_path, bad).unwrap();
    let err = fetch_disk(
        &Layout::new(other.join("layout")),
        &Store::new(other.join("cache")),
        &r,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
}

struct RegistryProcess(Child);

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(dir: &Path) -> (RegistryProcess, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    std::fs::write(&config, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n", dir.join("data").display())).unwrap();
    let child = Command::new("docker-registry")
        .args(["serve", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry is installed (run scripts/setup.sh)");
    let proc = RegistryProcess(child);
    for _ in 0..100 {
        if ureq::get(format!("http://{host}/v2/")).call().is_ok() {
            return (proc, host);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("docker-registry did not start on {host}");
}

fn push(host: &str, repo: &str, tag: &str, img: &Image) {
    for blob in [&img.config, &img.layer] {
        let resp = ureq::post(format!("http://{host}/v2/{repo}/blobs/uploads/"))
            .send_empty()
            .expect("start upload");
        let location = resp
            .headers()
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{host}{location}")
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        ureq::put(format!("{url}{sep}digest={}", digest(blob)))
            .content_type("application/octet-stream")
            .send(blob.as_slice())
            .expect("upload");
    }
    ureq::put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
        .content_type("application/vnd.oci.image.manifest.v1+json")
        .send(img.manifest.as_slice())
        .expect("push manifest");
}

#[test]
fn a_registry_image_is_pulled_cached_and_survives_the_registry_going_away() {
    let dir = tempdir("registry");
    let (registry, host) = start_registry(&dir);
    let img = image();
    push(&host, "kubevirt/demo-disk", "v1", &img);
    let store = Store::new(dir.join("cache"));
    let client = Registry::new(vec![host.clone()]);
    let r: ImageRef = format!("{host}/kubevirt/demo-disk:v1").parse().unwrap();
    let disk = fetch_disk(&client, &store, &r, Some("/disk/demo.img")).expect("pull");
    assert_eq!(std::fs::read(&disk).unwrap(), img.disk);
    let by_digest: ImageRef = format!("{host}/kubevirt/demo-disk@{}", digest(&img.manifest))
        .parse()
        .unwrap();
    let default_path =
        fetch_disk(&client, &store, &by_digest, None).expect("by digest, default /disk/ file");
    assert_eq!(std::fs::read(default_path).unwrap(), img.disk);
    let missing: ImageRef = format!("{host}/kubevirt/nope:v1").parse().unwrap();
    let err = fetch_disk(&client, &store, &missing, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found"), "{err}");
    drop(registry);
    assert_eq!(
        fetch_disk(&client, &store, &r, Some("/disk/demo.img"))
            .expect("cached while the registry is down"),
        disk
    );
}
