//! The release images of kubevirt-rs's components, named as upstream KubeVirt names its own
//! (`virt-operator`, `virt-api`, `virt-controller`, `virt-handler`, `virt-launcher`) plus CDI's
//! `cdi-importer` and our `local-volume-provisioner`; each is built from the release binaries
//! and the host's tools (with their libraries) like the node's own images ([`super::node`]), so
//! the same binaries give the same digests. `scripts/images.sh` writes them with
//! `kubevirt-local images` and pushes them to a registry.

use std::path::{Path, PathBuf};

use super::local::{LocalImage, LocalImageError};
use super::node::{self, IMPORTER_PATH, LAUNCHER_PATH, QEMU_IMG_PATH};

/// Where `kubevirt-controller` is in every image that runs it.
pub const CONTROLLER_PATH: &str = IMPORTER_PATH;
/// `losetup` (util-linux), which the provisioner runs for Block volumes.
pub const LOSETUP_PATH: &str = "/usr/sbin/losetup";
/// `unshare` (util-linux), which the node agent runs direct launchers under.
pub const UNSHARE_PATH: &str = "/usr/bin/unshare";

/// The binaries and host tools the images are made of.
#[derive(Clone, Debug)]
pub struct ComponentBinaries {
    /// `kubevirt-controller` (every role but the launcher's).
    pub controller: PathBuf,
    /// `kubevirt-launcher`.
    pub launcher: PathBuf,
    /// `qemu-img`, the importer's conversion engine.
    pub qemu_img: PathBuf,
    /// `losetup`.
    pub losetup: PathBuf,
    /// `unshare`.
    pub unshare: PathBuf,
}

impl ComponentBinaries {
    /// `kubevirt-controller` and `kubevirt-launcher` from `dir` (a cargo profile directory such
    /// as `target/release`) and the host's tools at their Debian paths.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            controller: dir.join("kubevirt-controller"),
            launcher: dir.join("kubevirt-launcher"),
            qemu_img: PathBuf::from(QEMU_IMG_PATH),
            losetup: PathBuf::from(LOSETUP_PATH),
            unshare: PathBuf::from(UNSHARE_PATH),
        }
    }

    /// The first input that is not a file, named, so nothing is built from half the inputs.
    pub fn check(&self) -> Result<(), LocalImageError> {
        for path in [
            &self.controller,
            &self.launcher,
            &self.qemu_img,
            &self.losetup,
            &self.unshare,
        ] {
            if !path.is_file() {
                return Err(LocalImageError::MissingInput { path: path.clone() });
            }
        }
        Ok(())
    }
}

/// An image running `kubevirt-controller ROLE` as its entrypoint, with `/tmp` and an
/// unprivileged-looking `/etc/passwd` so tools that look a user up find one.
fn controller_image(
    name: &str,
    tag: &str,
    bins: &ComponentBinaries,
    role: &str,
) -> Result<LocalImage, LocalImageError> {
    Ok(LocalImage::new(name, tag)
        .host_file(&bins.controller, CONTROLLER_PATH)?
        .dir("/tmp")?
        .file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\n",
            0o644,
        )?
        .file("/etc/group", "root:x:0:\n", 0o644)?
        .entrypoint([CONTROLLER_PATH, role]))
}

/// Every component image, tagged `tag`, in a fixed order.
pub fn component_images(
    bins: &ComponentBinaries,
    tag: &str,
) -> Result<Vec<LocalImage>, LocalImageError> {
    bins.check()?;
    let mut images = vec![
        controller_image("virt-operator", tag, bins, "operator")?,
        controller_image("virt-api", tag, bins, "api")?,
        controller_image("virt-controller", tag, bins, "run")?,
        // The node agent runs direct launchers itself (under unshare) when VMIs do not run in
        // pods, so it carries the launcher too.
        controller_image("virt-handler", tag, bins, "node")?
            .host_file(&bins.launcher, LAUNCHER_PATH)?
            .host_file(&bins.unshare, UNSHARE_PATH)?,
        controller_image("local-volume-provisioner", tag, bins, "provisioner")?
            .host_file(&bins.losetup, LOSETUP_PATH)?,
    ];
    // The node's own launcher and importer images, under release names: a release's
    // repositories sit directly under the registry, as upstream's do.
    images.push(node::launcher_image(&bins.launcher, tag)?.named("virt-launcher"));
    images.push(node::importer_image(&bins.controller, &bins.qemu_img, tag)?.named("cdi-importer"));
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bins() -> ComponentBinaries {
        // Host tools stand in for the release binaries: any dynamic executables do.
        ComponentBinaries {
            controller: PathBuf::from("/usr/bin/qemu-img"),
            launcher: PathBuf::from("/usr/bin/unshare"),
            ..ComponentBinaries::in_dir(Path::new("/nonexistent"))
        }
    }

    #[test]
    fn the_set_is_upstreams_names_with_their_roles() {
        let images = component_images(&bins(), "v1").unwrap();
        let names: Vec<String> = images.iter().map(LocalImage::reference).collect();
        assert_eq!(
            names,
            [
                "virt-operator:v1",
                "virt-api:v1",
                "virt-controller:v1",
                "virt-handler:v1",
                "local-volume-provisioner:v1",
                "virt-launcher:v1",
                "cdi-importer:v1",
            ]
        );
    }

    #[test]
    fn a_missing_binary_is_named_before_anything_is_built() {
        let err = component_images(&ComponentBinaries::in_dir(Path::new("/nonexistent")), "v1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/kubevirt-controller"), "{err}");
    }

    #[test]
    fn equal_inputs_give_equal_digests() {
        let dir = kubevirt_testsupport::tempdir("component-images");
        let images = component_images(&bins(), "v1").unwrap();
        let handler = images
            .iter()
            .find(|i| i.reference() == "virt-handler:v1")
            .unwrap();
        let a = handler.write_layout(&dir.join("a")).unwrap();
        let b = handler.write_layout(&dir.join("b")).unwrap();
        assert_eq!(a.digest, b.digest);
        let api = images
            .iter()
            .find(|i| i.reference() == "virt-api:v1")
            .unwrap();
        assert_ne!(api.write_layout(&dir.join("c")).unwrap().digest, a.digest);
    }
}
