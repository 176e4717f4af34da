//! containerDisks from a real registry (Debian's docker-registry on loopback) and from a local OCI
//! layout: pulled, digest-verified, cached, extracted read-only, and still usable offline.

mod common;

use common::{ImageBlobs, digest, tempdir};
use kubevirt_launcher::oci::{ImageRef, Layout, OciError, Registry, Store, fetch_disk};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A containerDisk image: `disk/demo.img` in one layer.
struct Image {
    disk: Vec<u8>,
    blobs: ImageBlobs,
}

fn image() -> Image {
    let disk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let blobs = ImageBlobs::with(&[("disk/demo.img", &disk)]);
    Image { disk, blobs }
}

#[test]
fn a_local_layout_yields_a_verified_read_only_disk() {
    let dir = tempdir("layout");
    let img = image();
    img.blobs.write_layout(&dir.join("layout"), "v1");
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
    img.blobs.write_layout(&other.join("layout"), "v1");
    let layer_path = other
        .join("layout/blobs/sha256")
        .join(&digest(&img.blobs.layer)[7..]);
    let mut bad = img.blobs.layer.clone();
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
    for blob in [&img.blobs.config, &img.blobs.layer] {
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
        .send(img.blobs.manifest.as_slice())
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
    let by_digest: ImageRef = format!("{host}/kubevirt/demo-disk@{}", digest(&img.blobs.manifest))
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
