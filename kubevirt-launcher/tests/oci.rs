//! containerDisks from a real registry (Debian's docker-registry on loopback) and from a local OCI
//! layout: pulled, digest-verified, cached, extracted read-only, and still usable offline.

mod common;

use common::{ImageBlobs, digest, push, start_registry, tempdir};
use kubevirt_launcher::oci::{ImageRef, Layout, OciError, Registry, Store, fetch_disk};

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

#[test]
fn a_registry_image_is_pulled_cached_and_survives_the_registry_going_away() {
    let dir = tempdir("registry");
    let (registry, host) = start_registry(&dir);
    let img = image();
    push(&host, "kubevirt/demo-disk", "v1", &img.blobs);
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

#[test]
fn a_missing_layout_says_how_to_make_one() {
    let dir = tempdir("no-layout");
    let r: ImageRef = "example.com/demo/disk:v1".parse().unwrap();
    let err = fetch_disk(
        &Layout::new(dir.join("nowhere")),
        &Store::new(dir.join("cache")),
        &r,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("is not an OCI image layout")
            && err.contains("cargo run -p kubevirt-demo-guest --"),
        "{err}"
    );
}
