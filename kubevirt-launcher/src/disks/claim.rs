//! A Filesystem claim's `disk.img`, created the way upstream's virt-launcher creates it when the
//! claim's mount holds none: a sparse raw file of the claim's capacity, or of the space the
//! filesystem has when that is less but within the tolerated shortfall (storage provisioners
//! often give a little less than asked, for filesystem overhead). An existing `disk.img` is
//! never truncated, grown or replaced.

use super::PrepareError;
use std::fs;
use std::path::Path;

/// How many percent less than the claim's capacity the filesystem may have, the disk then
/// taking what there is (upstream's `pvc-tolerate-less-space-up-to-percent`, default 10).
pub const LESS_PVC_SPACE_TOLERATION: u64 = 10;

/// Bytes left free on the claim's filesystem (upstream's `minimumReservePVCBytes` default).
pub const MINIMUM_PVC_RESERVE_BYTES: u64 = 128 << 10;

/// The size of the `disk.img` to create for a claim of `capacity` bytes on a filesystem with
/// `available` bytes (after the reserve). `Err(())`: too little space even with the toleration.
fn size_for(capacity: u64, available: u64) -> Result<u64, ()> {
    if capacity <= available {
        return Ok(capacity);
    }
    let tolerated = u128::from(capacity) * u128::from(100 - LESS_PVC_SPACE_TOLERATION) / 100;
    if tolerated > u128::from(available) {
        return Err(());
    }
    Ok(available)
}

/// The bytes an unprivileged writer may still use on the filesystem holding `dir`, less the
/// reserve.
fn available_in(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    Ok(free.saturating_sub(MINIMUM_PVC_RESERVE_BYTES))
}

/// Creates the sparse `file` (`<claim mount>/disk.img`) for volume `volume`, whose claim has
/// `capacity` bytes, in the claim's mounted directory `dir`; returns its size. The file must
/// not exist (it is created exclusively: one that appears meanwhile is left alone).
///
/// # Errors
/// The filesystem has less than the capacity less the toleration, or the file could not be
/// created; nothing is left behind.
pub fn create_disk_img(
    volume: &str,
    dir: &Path,
    file: &Path,
    capacity: u64,
) -> Result<u64, PrepareError> {
    let io = |source| PrepareError::Io {
        volume: volume.into(),
        path: file.display().to_string(),
        source,
    };
    let available = available_in(dir).map_err(io)?;
    let size = size_for(capacity, available).map_err(|()| PrepareError::NotEnoughSpace {
        volume: volume.into(),
        path: file.display().to_string(),
        demanded: capacity,
        available,
        toleration: LESS_PVC_SPACE_TOLERATION,
    })?;
    if size < capacity {
        tracing::warn!(
            volume,
            reason = "ToleratedSmallPV",
            "PV size too small: expected {capacity} B, found {available} B. Using it anyway, it is within {LESS_PVC_SPACE_TOLERATION} % toleration"
        );
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .map_err(io)?;
    if let Err(e) = f.set_len(size) {
        drop(f);
        let _ = fs::remove_file(file);
        return Err(io(e));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn size_is_the_capacity_or_what_is_there_within_the_toleration() {
        assert_eq!(size_for(100 << 20, 1 << 30), Ok(100 << 20));
        assert_eq!(size_for(1000, 1000), Ok(1000));
        // 10 % short: taken as it is.
        assert_eq!(size_for(1000, 900), Ok(900));
        assert_eq!(size_for(1000, 899), Err(()));
        assert_eq!(size_for(u64::MAX, 0), Err(()));
    }

    #[test]
    fn creates_a_sparse_file_of_the_capacity() {
        let dir = kubevirt_testsupport::tempdir("claim-create");
        let file = dir.join("disk.img");
        let size = create_disk_img("data", &dir, &file, 256 << 20).unwrap();
        assert_eq!(size, 256 << 20);
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(meta.len(), 256 << 20);
        assert!(meta.blocks() < 64, "sparse: {} blocks", meta.blocks());
    }

    #[test]
    fn an_existing_disk_img_is_refused_and_left_untouched() {
        let dir = kubevirt_testsupport::tempdir("claim-existing");
        let file = dir.join("disk.img");
        fs::write(&file, b"the guest's data").unwrap();
        let e = create_disk_img("data", &dir, &file, 1 << 20).unwrap_err();
        assert!(
            matches!(&e, PrepareError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{e}"
        );
        assert_eq!(fs::read(&file).unwrap(), b"the guest's data");
    }

    #[test]
    fn a_missing_claim_mount_is_an_error_naming_the_volume_and_file() {
        let base = kubevirt_testsupport::tempdir("claim-unmounted");
        let dir = base.join("not-there");
        let file = dir.join("disk.img");
        let e = create_disk_img("data", &dir, &file, 1 << 20).unwrap_err();
        assert!(
            matches!(&e, PrepareError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("volume data: {}: ", file.display())),
            "{e}"
        );
        assert!(!dir.exists(), "nothing is created");
    }

    #[test]
    fn too_little_space_is_refused_naming_the_volume() {
        let dir = kubevirt_testsupport::tempdir("claim-full");
        let file = dir.join("disk.img");
        let e = create_disk_img("data", &dir, &file, 1 << 60).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("volume data: unable to create ")
                && msg.contains("not enough space, demanded size 1152921504606846976 B")
                && msg.contains("10 % toleration"),
            "{msg}"
        );
        assert!(!file.exists(), "nothing is left behind");
    }
}
