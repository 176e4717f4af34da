//! Copying a volume: a file, a directory tree, or a Block volume's image, as cheaply as the
//! file system allows. A file is cloned (`FICLONE`: shared extents, copy-on-write, on btrfs, XFS
//! with reflink, bcachefs ...) where that works, and otherwise copied sparsely: only the extents
//! `SEEK_DATA`/`SEEK_HOLE` report as data are copied (`copy_file_range`, in the kernel), so holes
//! stay holes and a 10 GiB volume holding 1 MiB costs 1 MiB.
//!
//! Snapshots ([`super::snapshotter`]) and restores from them ([`super::disk`]) use it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::SeekFrom;

/// Bytes moved by one `copy_file_range` or read/write round.
const CHUNK: u64 = 8 << 20;

/// How a file was copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Its extents are shared with the source (`FICLONE`).
    Reflink,
    /// Its data extents were copied; holes stayed holes.
    Sparse,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct CopyError {
    /// What was being done.
    pub what: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CopyError + use<> {
    let path = path.to_path_buf();
    move |source| CopyError { what, path, source }
}

/// Copies the file `src` to the new file `dst` (replaced if it exists), with `src`'s length,
/// mode and owner: a clone where the file system can, else a sparse copy.
pub fn copy_file(src: &Path, dst: &Path) -> Result<Method, CopyError> {
    let from = File::open(src).map_err(err("opening", src))?;
    let meta = from.metadata().map_err(err("reading", src))?;
    let to = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .map_err(err("creating", dst))?;
    let method = match rustix::fs::ioctl_ficlone(&to, &from) {
        Ok(()) => Method::Reflink,
        Err(_) => {
            sparse_copy(&from, &to, meta.len()).map_err(err("copying into", dst))?;
            Method::Sparse
        }
    };
    to.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(err("setting the mode of", dst))?;
    owner(dst, &meta)?;
    to.sync_all().map_err(err("syncing", dst))?;
    Ok(method)
}

/// Copies the data extents of `from` (`len` bytes long) into the empty `to`, which ends up
/// `len` bytes long with holes where `from` has them.
pub fn sparse_copy(from: &File, to: &File, len: u64) -> io::Result<()> {
    let mut at = 0;
    while at < len {
        let start = match rustix::fs::seek(from, SeekFrom::Data(at)) {
            Ok(s) => s,
            // No data past `at`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = match rustix::fs::seek(from, SeekFrom::Hole(start)) {
            Ok(e) => e.min(len),
            Err(e) => return Err(e.into()),
        };
        copy_range(from, to, start, end)?;
        at = end;
    }
    to.set_len(len)
}

/// Copies `[start, end)` of `from` to the same offsets of `to`: in the kernel where it can,
/// through a buffer otherwise (file systems or kernels without cross-file `copy_file_range`).
fn copy_range(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        let want = (end - pos).min(CHUNK) as usize;
        let (mut off_in, mut off_out) = (pos, pos);
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => pos += n as u64,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) => {
                let mut buf = vec![0u8; want];
                from.read_exact_at(&mut buf, pos)?;
                to.write_all_at(&buf, pos)?;
                pos += want as u64;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Copies the directory `src` to `dst`, which must not exist: directories, regular files (as
/// [`copy_file`]) and symlinks, with modes and owners; other kinds (sockets, fifos, devices) are
/// left out. Returns how many files were cloned and copied sparsely.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(usize, usize), CopyError> {
    let meta = fs::symlink_metadata(src).map_err(err("reading", src))?;
    fs::create_dir(dst).map_err(err("creating", dst))?;
    let mut counts = (0, 0);
    for entry in fs::read_dir(src).map_err(err("listing", src))? {
        let entry = entry.map_err(err("listing", src))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().map_err(err("reading", &from))?;
        if kind.is_dir() {
            let (r, s) = copy_tree(&from, &to)?;
            counts = (counts.0 + r, counts.1 + s);
        } else if kind.is_file() {
            match copy_file(&from, &to)? {
                Method::Reflink => counts.0 += 1,
                Method::Sparse => counts.1 += 1,
            }
        } else if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(err("reading", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(err("linking", &to))?;
            let m = fs::symlink_metadata(&from).map_err(err("reading", &from))?;
            std::os::unix::fs::lchown(&to, Some(m.uid()), Some(m.gid()))
                .map_err(err("setting the owner of", &to))?;
        }
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(err("setting the mode of", dst))?;
    owner(dst, &meta)?;
    Ok(counts)
}

/// Gives `path` the owner of `meta` (a pod's user keeps writing its files after a restore).
fn owner(path: &Path, meta: &fs::Metadata) -> Result<(), CopyError> {
    match std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid())) {
        Ok(()) => Ok(()),
        // An unprivileged copier (tests) cannot give files away; they stay its own.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(err("setting the owner of", path)(e)),
    }
}

/// The data extents of `file` as `SEEK_DATA`/`SEEK_HOLE` report them.
pub fn data_extents(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let len = file.metadata()?.len();
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))?.min(len);
        out.push((start, end));
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BLOCK: u64 = 4096;

    fn file_with(path: &Path, len: u64, extents: &[(u64, u8)]) -> File {
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        f.set_len(len).unwrap();
        for (block, byte) in extents {
            f.write_all_at(&vec![*byte; BLOCK as usize], block * BLOCK)
                .unwrap();
        }
        f.sync_all().unwrap();
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random data blocks in a sparse file: the copy reads the same and has the same holes.
        #[test]
        fn a_sparse_copy_keeps_data_and_holes(
            blocks in 1u64..512,
            extents in prop::collection::vec((0u64..512, 1u8..=255), 0..24),
            tail in 0u64..BLOCK,
        ) {
            let extents: Vec<(u64, u8)> = extents.into_iter().filter(|(b, _)| *b < blocks).collect();
            let dir = kubevirt_testsupport::tempdir("sparse-copy");
            let len = blocks * BLOCK + tail;
            let src = file_with(&dir.join("src"), len, &extents);
            let dst = File::options().read(true).write(true).create(true).truncate(true)
                .open(dir.join("dst")).unwrap();
            sparse_copy(&src, &dst, len).unwrap();
            prop_assert_eq!(fs::read(dir.join("src")).unwrap(), fs::read(dir.join("dst")).unwrap());
            prop_assert_eq!(data_extents(&dst).unwrap(), data_extents(&src).unwrap());
            // No more space than the source (which may hold more extent-tree blocks).
            prop_assert!(dst.metadata().unwrap().blocks() <= src.metadata().unwrap().blocks());
        }
    }

    #[test]
    fn a_file_keeps_its_mode_and_a_large_hole_costs_nothing() {
        let dir = kubevirt_testsupport::tempdir("copy-file");
        let src = dir.join("disk.img");
        file_with(&src, 1 << 30, &[(7, b'x'), (100_000, b'y')]);
        fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
        let dst = dir.join("copy.img");
        copy_file(&src, &dst).unwrap();
        let meta = fs::metadata(&dst).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert!(meta.blocks() * 512 <= 1 << 20, "{} blocks", meta.blocks());
        let mut buf = [0u8; 4];
        File::open(&dst)
            .unwrap()
            .read_exact_at(&mut buf, 100_000 * BLOCK)
            .unwrap();
        assert_eq!(&buf, b"yyyy");
    }

    #[test]
    fn a_tree_is_copied_with_links_and_modes() {
        let dir = kubevirt_testsupport::tempdir("copy-tree");
        let src = dir.join("pvc-1");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("marker"), b"first").unwrap();
        fs::write(src.join("sub/disk.img"), b"disk").unwrap();
        std::os::unix::fs::symlink("marker", src.join("link")).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o777)).unwrap();
        let dst = dir.join("snap");
        let (reflinked, sparse) = copy_tree(&src, &dst).unwrap();
        assert_eq!(reflinked + sparse, 2);
        assert_eq!(fs::read(dst.join("marker")).unwrap(), b"first");
        assert_eq!(fs::read(dst.join("sub/disk.img")).unwrap(), b"disk");
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("marker")
        );
        assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o777, 0o777);
        // The copy is independent of its source.
        fs::write(src.join("marker"), b"second").unwrap();
        assert_eq!(fs::read(dst.join("marker")).unwrap(), b"first");
        // A destination that exists is refused, not merged into.
        let e = copy_tree(&src, &dst).unwrap_err().to_string();
        assert!(e.contains("creating"), "{e}");
    }
}
