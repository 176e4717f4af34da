//! Temporary directories: unique (not named by pid, so parallel and repeated runs never meet),
//! removed when the test passes, kept (and named on stderr) when it panics.

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
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("test failed: keeping {}", dir.keep().display());
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
    fn a_kept_directory_stays() {
        let path = tempdir("kept").keep();
        assert!(path.is_dir());
        std::fs::remove_dir_all(path).unwrap();
    }
}
