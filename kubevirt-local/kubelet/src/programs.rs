//! Finding a program on a search path (`PATH`), as a shell does: the first directory holding an
//! executable file of that name.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The first `dir/name` in the search path `path` (`PATH`'s syntax) that is an executable file;
/// `None` when `path` is `None` or no directory has it.
pub fn find_program(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|f| is_executable(f))
}

/// `name` on this process's `PATH` (see [`find_program`]).
pub fn on_path(name: &str) -> Option<PathBuf> {
    find_program(name, std::env::var_os("PATH").as_deref())
}

fn is_executable(f: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(f).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_first_executable_file_of_that_name_is_found() {
        let d = std::env::temp_dir().join(format!("kv-programs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["plain", "dir", "exec", "later"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // Not executable, a directory, then the real one and a later copy.
        std::fs::write(d.join("plain/tool"), "").unwrap();
        std::fs::create_dir(d.join("dir/tool")).unwrap();
        for sub in ["exec", "later"] {
            let f = d.join(sub).join("tool");
            std::fs::write(&f, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = std::env::join_paths(
            ["/nonexistent", "plain", "dir", "exec", "later"].map(|s| d.join(s)),
        )
        .unwrap();
        assert_eq!(
            find_program("tool", Some(path.as_os_str())),
            Some(d.join("exec/tool"))
        );
        assert_eq!(find_program("other", Some(path.as_os_str())), None);
        assert_eq!(find_program("tool", None), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
