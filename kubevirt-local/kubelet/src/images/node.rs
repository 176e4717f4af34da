//! The images a node serves itself, built from host files (see [`super::local`]): the sandbox
//! (pause) image every pod's sandbox runs, and the virt-launcher image the VMI controller's pods
//! run. Nothing is pulled from outside: `kubevirt-local up` on a fresh machine runs pods with
//! what is installed.

use std::path::{Path, PathBuf};

use super::local::{LocalImage, LocalImageError};

/// Where Debian's `busybox-static` installs its (static) binary.
pub const STATIC_BUSYBOX: &str = "/usr/bin/busybox";
/// The pause image's repository.
pub const PAUSE_NAME: &str = "kubevirt-rs/pause";
/// The pause image's tag.
pub const PAUSE_TAG: &str = "1";
/// The launcher image's repository (tagged with the crate version).
pub const LAUNCHER_NAME: &str = "kubevirt-rs/virt-launcher";
/// Where the launcher binary is in its image.
pub const LAUNCHER_PATH: &str = "/usr/bin/kubevirt-launcher";
/// The CDI importer image's repository (tagged with the crate version).
pub const IMPORTER_NAME: &str = "kubevirt-rs/cdi-importer";
/// Where the importer's binary (`kubevirt-controller`, run as `cdi-importer`) is in its image.
pub const IMPORTER_PATH: &str = "/usr/bin/kubevirt-controller";
/// Where `qemu-img`, the importer's conversion engine, is in its image (and on Debian hosts).
pub const QEMU_IMG_PATH: &str = "/usr/bin/qemu-img";
/// Firmware the launcher maps for VMIs booting through BIOS or UEFI (Debian's `seabios` and
/// `ovmf`), carried into the launcher image when the host has them.
pub const FIRMWARE: &[&str] = &[
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_VARS_4M.fd",
];

/// The sandbox image: the static busybox as `/bin/busybox` with `sh` and `sleep`; its entrypoint
/// sleeps forever, reaps its children as PID 1 and exits at once on SIGTERM or SIGINT.
pub fn pause_image(busybox: &Path) -> Result<LocalImage, LocalImageError> {
    Ok(LocalImage::new(PAUSE_NAME, PAUSE_TAG)
        .host_file(busybox, "/bin/busybox")?
        .symlink("/bin/sh", "busybox")?
        .symlink("/bin/sleep", "busybox")?
        .entrypoint([
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
        ]))
}

/// A busybox image: the static busybox at `/bin/busybox` with a symlink per applet in
/// `applets`, `/tmp`, `/etc` (root and nobody in passwd and group), `/proc`, `/sys`, `/dev`,
/// `/root`, `/var/www`; cmd `sh`.
pub fn busybox_image(
    name: &str,
    tag: &str,
    busybox: &Path,
    applets: &[&str],
) -> Result<LocalImage, LocalImageError> {
    let mut image = LocalImage::new(name, tag).host_file(busybox, "/bin/busybox")?;
    for d in ["/tmp", "/proc", "/sys", "/dev", "/root", "/var/www"] {
        image = image.dir(d)?;
    }
    image = image
        .file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
            0o644,
        )?
        .file("/etc/group", "root:x:0:\nnobody:x:65534:\n", 0o644)?;
    for applet in applets
        .iter()
        .filter(|a| !a.is_empty() && **a != "busybox" && !a.contains('/'))
    {
        image = image.symlink(&format!("/bin/{applet}"), "busybox")?;
    }
    Ok(image.cmd(["sh"]))
}

/// The launcher image `kubevirt-rs/virt-launcher:<version>`: `launcher` at
/// [`LAUNCHER_PATH`] with its libraries, the host's [`FIRMWARE`] files that exist, `/tmp`;
/// entrypoint the launcher (pods name their command: `serve`, `console-log`).
pub fn launcher_image(launcher: &Path, version: &str) -> Result<LocalImage, LocalImageError> {
    let mut image = LocalImage::new(LAUNCHER_NAME, version)
        .host_file(launcher, LAUNCHER_PATH)?
        .dir("/tmp")?
        .dir("/var/run/kubevirt-rs/vmi")?
        .dir("/var/cache/kubevirt-rs/images")?
        .file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\n",
            0o644,
        )?
        .file("/etc/group", "root:x:0:\n", 0o644)?
        .entrypoint([LAUNCHER_PATH]);
    for firmware in FIRMWARE.iter().map(PathBuf::from).filter(|f| f.is_file()) {
        let at = firmware.to_string_lossy().into_owned();
        image = image.host_file(firmware, &at)?;
    }
    Ok(image)
}

/// The CDI importer image `kubevirt-rs/cdi-importer:<version>`: `controller` (the
/// `kubevirt-controller` binary) at [`IMPORTER_PATH`] and `qemu_img` at [`QEMU_IMG_PATH`], each
/// with its libraries, `/tmp`, `/data`; entrypoint `kubevirt-controller cdi-importer`.
pub fn importer_image(
    controller: &Path,
    qemu_img: &Path,
    version: &str,
) -> Result<LocalImage, LocalImageError> {
    Ok(LocalImage::new(IMPORTER_NAME, version)
        .host_file(controller, IMPORTER_PATH)?
        .host_file(qemu_img, QEMU_IMG_PATH)?
        .dir("/tmp")?
        .dir("/data")?
        .file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\n",
            0o644,
        )?
        .file("/etc/group", "root:x:0:\n", 0o644)?
        .entrypoint([IMPORTER_PATH, "cdi-importer"]))
}
