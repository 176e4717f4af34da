//! Temporary directories: unique (not named by pid, so parallel and repeated runs never meet),
//! removed when the test passes, kept (and named on stderr) when it panics. Before removing one,
//! whatever a node left mounted in it is unmounted and the loop devices backed by its files are
//! detached, so the removal frees the space and never reaches through a mount.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A directory for one test, removed on drop unless the thread is panicking.
#[derive(Debug)]
pub struct TestDir(Option<tempfile::TempDir>);

/// A fresh directory under the system temp dir, named `kv-<tag>-<random>`.
///
/// # Panics
/// When the directory cannot be created.
pub fn tempdir(tag: &str) -> TestDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("kv-{tag}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temporary directory for {tag}: {e}"));
    TestDir(Some(dir))
}

impl TestDir {
    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Keeps the directory past this value (for a process that outlives the test's scope);
    /// returns its path.
    pub fn keep(mut self) -> PathBuf {
        self.0
            .take()
            .map_or_else(PathBuf::new, tempfile::TempDir::keep)
    }
}

impl Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<std::ffi::OsStr> for TestDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path().as_os_str()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        if std::thread::panicking() {
            eprintln!("test failed: keeping {}", dir.keep().display());
            return;
        }
        release(dir.path());
        if let Err(e) = dir.close() {
            eprintln!("removing a test's temporary directory: {e}");
        }
    }
}

/// Unmounts every mount under `dir` (deepest first, lazily) and detaches the loop devices whose
/// backing file is under it: a node's leftovers (a pod's volume, a volume's loop device) that
/// its own teardown missed.
fn release(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for mount in mounts {
        eprintln!("unmounting {} left in a test's directory", mount.display());
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mount)
            .status();
    }
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let backing = std::fs::read_to_string(entry.path().join("loop/backing_file"));
        if backing.is_ok_and(|b| Path::new(b.trim()).starts_with(&dir)) {
            let device = Path::new("/dev").join(entry.file_name());
            eprintln!("detaching {} left in a test's directory", device.display());
            let _ = std::process::Command::new("losetup")
                .arg("-d")
                .arg(&device)
                .status();
        }
    }
}

/// The first file called `name` anywhere under `dir` (depth first), if any.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir()
            && let Some(found) = find_file(&p, name)
        {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_test_leaves_nothing_behind_and_two_dirs_differ() {
        let a = tempdir("t");
        let b = tempdir("t");
        assert_ne!(a.path(), b.path());
        std::fs::create_dir_all(a.join("x/y")).unwrap();
        std::fs::write(a.join("x/y/file"), b"1").unwrap();
        assert_eq!(find_file(&a, "file"), Some(a.join("x/y/file")));
        assert_eq!(find_file(&a, "other"), None);
        let path = a.to_path_buf();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn a_mount_left_in_it_is_unmounted_before_the_removal() {
        let dir = tempdir("mounted");
        let mount = dir.join("m");
        std::fs::create_dir(&mount).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mount)
            .status();
        if !mounted.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        std::fs::write(mount.join("file"), b"1").unwrap();
        let path = dir.to_path_buf();
        drop(dir);
        assert!(!path.exists());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(path.to_str().unwrap()), "{mounts}");
    }

    #[test]
    fn a_kept_directory_stays() {
        let path = tempdir("kept").keep();
        assert!(path.is_dir());
        std::fs::remove_dir_all(path).unwrap();
    }
}
