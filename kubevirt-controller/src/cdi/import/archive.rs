//! `contentType: archive`: a tar archive unpacked into a Filesystem claim instead of a disk.
//!
//! The archive is unpacked into a staging directory beside the claim's files and moved into
//! place only once whole, so a broken archive leaves nothing half-unpacked. Paths that would
//! leave the directory (`..`, absolute) are refused by the tar crate's unpacking.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The staging directory's name.
pub const STAGING: &str = ".importer-archive";

/// Failures of unpacking.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// The archive could not be unpacked.
    #[error("unpacking the tar archive: {0}")]
    Unpack(#[source] io::Error),
    /// The directory could not be prepared or filled.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// Unpacks the tar archive `reader` into `dir`, replacing entries of the same names; returns
/// how many top-level entries it placed.
pub fn extract(reader: Box<dyn Read>, dir: &Path) -> Result<usize, ArchiveError> {
    stage(reader, dir)?.place()
}

/// An archive unpacked beside `dir`, not yet in place; removed on drop.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    staging: PathBuf,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io { what, path, source }
}

/// Unpacks the tar archive `reader` into a staging directory in `dir`.
pub fn stage(reader: Box<dyn Read>, dir: &Path) -> Result<Staged, ArchiveError> {
    let staging = dir.join(STAGING);
    remove_any(&staging).map_err(io_err("removing", &staging))?;
    fs::create_dir(&staging).map_err(io_err("creating", &staging))?;
    let staged = Staged {
        dir: dir.to_path_buf(),
        staging,
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_overwrite(true);
    archive
        .unpack(&staged.staging)
        .map_err(ArchiveError::Unpack)?;
    Ok(staged)
}

impl Staged {
    /// Moves the unpacked entries into the directory, replacing entries of the same names;
    /// returns how many top-level entries it placed.
    pub fn place(self) -> Result<usize, ArchiveError> {
        let mut placed = 0;
        let entries = fs::read_dir(&self.staging).map_err(io_err("reading", &self.staging))?;
        for entry in entries {
            let entry = entry.map_err(io_err("reading", &self.staging))?;
            let to = self.dir.join(entry.file_name());
            remove_any(&to).map_err(io_err("replacing", &to))?;
            fs::rename(entry.path(), &to).map_err(io_err("moving into place", &to))?;
            placed += 1;
        }
        Ok(placed)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.staging);
    }
}

/// Removes a file or directory tree; absent is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(path: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacks_into_the_directory_and_replaces() {
        let dir = kubevirt_testsupport::tempdir("archive");
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/old"), b"x").unwrap();
        let n = extract(
            Box::new(io::Cursor::new(tar_with("sub/new.txt", b"hello"))),
            &dir,
        )
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read(dir.join("sub/new.txt")).unwrap(), b"hello");
        assert!(!dir.join("sub/old").exists());
        assert!(!dir.join(STAGING).exists());
    }

    #[test]
    fn a_broken_archive_leaves_nothing() {
        let dir = kubevirt_testsupport::tempdir("archive");
        let mut t = tar_with("a.txt", &[7u8; 4000]);
        t.truncate(1500);
        let e = extract(Box::new(io::Cursor::new(t)), &dir).unwrap_err();
        assert!(
            e.to_string().starts_with("unpacking the tar archive"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
}
