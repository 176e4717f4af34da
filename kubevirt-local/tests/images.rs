//! The release images (issue 18): `scripts/images.sh REGISTRY TAG` builds every component's image
//! from the binaries and pushes it to a real registry (Debian's docker-registry) with the digest
//! it was built with; building again from the same binaries gives the same digests; bad input is
//! named and pushes nothing.
//!
//! The image builder and the script are the real ones; the controller and launcher binaries are
//! stood in for by host executables (dynamically linked like ours, so their libraries go in too):
//! this build's debug binaries weigh ~200 MiB each image and would make this test a minute
//! long. What the images' entrypoints run is checked where the images run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kubevirt_testsupport::registry::Registry;
use kubevirt_testsupport::tempdir;

const COMPONENTS: &[&str] = &[
    "virt-operator",
    "virt-api",
    "virt-controller",
    "virt-handler",
    "local-volume-provisioner",
    "virt-launcher",
    "cdi-importer",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A directory with the three binaries the script takes: this build's `kubevirt-local` (the
/// builder) and dynamically linked host executables standing in for the other two.
fn binaries(dir: &Path) -> PathBuf {
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    for (name, path) in [
        ("kubevirt-controller", PathBuf::from("/usr/bin/qemu-img")),
        ("kubevirt-launcher", PathBuf::from("/usr/bin/skopeo")),
        (
            "kubevirt-local",
            PathBuf::from(env!("CARGO_BIN_EXE_kubevirt-local")),
        ),
    ] {
        std::os::unix::fs::symlink(path, bins.join(name)).unwrap();
    }
    bins
}

fn images_sh(bins: &Path, registry: &str, tag: &str) -> Output {
    Command::new(workspace().join("scripts/images.sh"))
        .args([registry, tag])
        .env("KUBEVIRT_BINARIES", bins)
        .output()
        .expect("running scripts/images.sh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `NAME:TAG DIGEST` lines of `kubevirt-local images`, as (name, digest).
fn build(bins: &Path, tag: &str, out: &Path) -> Vec<(String, String)> {
    let o = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .args(["images", "--tag", tag, "--binaries"])
        .arg(bins)
        .arg("--output-dir")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
        .lines()
        .map(|l| {
            let (reference, digest) = l.split_once(' ').expect("NAME:TAG DIGEST");
            let name = reference.strip_suffix(&format!(":{tag}")).unwrap();
            (name.to_string(), digest.to_string())
        })
        .collect()
}

#[test]
fn the_release_images_are_pushed_with_the_digests_they_were_built_with() {
    let dir = tempdir("release-images");
    let bins = binaries(&dir);
    let registry = Registry::start(&dir.join("registry")).unwrap();

    let o = images_sh(&bins, registry.address(), "t1");
    assert!(o.status.success(), "images.sh: {}", text(&o.stderr));
    let pushed: Vec<(String, String)> = text(&o.stdout)
        .lines()
        .map(|l| {
            let (reference, digest) = l.rsplit_once('@').expect("REF@DIGEST");
            (reference.to_string(), digest.to_string())
        })
        .collect();
    assert_eq!(pushed.len(), COMPONENTS.len(), "{pushed:?}");
    for ((reference, digest), name) in pushed.iter().zip(COMPONENTS) {
        assert_eq!(reference, &format!("{}/{name}:t1", registry.address()));
        assert!(digest.starts_with("sha256:"), "{digest}");
        assert_eq!(
            registry.manifest_digest(name, "t1").unwrap().as_ref(),
            Some(digest),
            "the registry holds {name}:t1 under the digest it was built with"
        );
    }

    // Reproducible: the same binaries, built again elsewhere, give the same digests.
    let again = build(&bins, "t1", &dir.join("again"));
    let again_digests: Vec<&String> = again.iter().map(|(_, d)| d).collect();
    let pushed_digests: Vec<&String> = pushed.iter().map(|(_, d)| d).collect();
    assert_eq!(again_digests, pushed_digests);
    // The roles differ only in their entrypoints, so they are distinct images.
    let mut unique = again_digests.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), COMPONENTS.len());
}

#[test]
fn bad_input_is_named_and_nothing_is_pushed() {
    let dir = tempdir("release-images-bad");
    let registry = Registry::start(&dir.join("registry")).unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_kubevirt-local"),
        empty.join("kubevirt-local"),
    )
    .unwrap();

    let o = images_sh(&empty, registry.address(), "t1");
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{}", empty.join("kubevirt-controller").display())),
        "{err}"
    );
    assert_eq!(
        registry.manifest_digest("virt-operator", "t1").unwrap(),
        None
    );

    let o = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .args(["images", "--tag", "no:colons", "--output-dir"])
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--tag \"no:colons\""),
        "{}",
        text(&o.stderr)
    );
    assert!(!dir.join("out").exists(), "nothing is written");
}
