//! The demo guest's container image: the PVH ELF at [`KERNEL_PATH`] in one layer, written as an
//! OCI image layout tagged [`IMAGE_TAG`] with the launcher's own image writer.

use std::path::{Path, PathBuf};

use kubevirt_launcher::oci::ImageBlobs;
use kubevirt_vmm::testguest::TestGuestError;

/// Where the image keeps the kernel (`firmware.kernelBoot.container.kernelPath`).
pub const KERNEL_PATH: &str = "/boot/demo.elf";

/// The tag the layout gives the image (`oci:<dir>:demo`).
pub const IMAGE_TAG: &str = "demo";

/// What can go wrong writing the demo guest out.
#[derive(Debug, thiserror::Error)]
pub enum DemoImageError {
    /// Wrapping the guest into a PVH ELF failed (a bug in the guest or the stub).
    #[error("building the demo guest's PVH ELF: {0}")]
    Elf(#[from] TestGuestError),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or layout directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Writes the demo guest's image as an OCI image layout at `dir` and returns the reference a
/// VMI boots it by (`oci:<dir>:demo`, kernel at [`KERNEL_PATH`]).
///
/// # Errors
/// [`DemoImageError::Write`] when `dir` cannot be created or written.
pub fn write_image(dir: &Path) -> Result<String, DemoImageError> {
    write_image_with(dir, &[])
}

/// [`write_image`] with more files in the image (`path`, contents; e.g. an initrd the VMI's
/// `kernelBoot.container.initrdPath` loads into guest RAM).
///
/// # Errors
/// [`DemoImageError::Write`] when `dir` cannot be created or written.
pub fn write_image_with(dir: &Path, extra: &[(&str, &[u8])]) -> Result<String, DemoImageError> {
    let elf = crate::pvh_elf()?;
    let write = |source| DemoImageError::Write {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<(&str, &[u8])> = vec![(KERNEL_PATH.trim_start_matches('/'), &elf)];
    files.extend_from_slice(extra);
    ImageBlobs::with(&files)
        .and_then(|image| image.write_layout(dir, IMAGE_TAG))
        .map_err(write)?;
    Ok(format!("oci:{}:{IMAGE_TAG}", dir.display()))
}

/// Writes the demo guest's PVH ELF to `path` (what `examples/vmm_hello.rs` and QEMU's
/// `-kernel` boot).
///
/// # Errors
/// [`DemoImageError::Write`] when `path` cannot be written.
pub fn write_elf(path: &Path) -> Result<(), DemoImageError> {
    let elf = crate::pvh_elf()?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| DemoImageError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, elf).map_err(|source| DemoImageError::Write {
        path: path.to_path_buf(),
        source,
    })
}
