//! The `init` container's part of a node-pull import: this binary, its dynamic loader and the
//! shared libraries it needs copied into one directory, so the user's image (maybe `FROM
//! scratch`, without a libc) can run the copy as `<dir>/ld.so --library-path <dir>
//! <dir>/server ...`.
//!
//! The loader is the binary's `PT_INTERP`; the libraries are what that loader resolves for it
//! (`ld.so --list <binary>`, what `ldd` prints), each copied under the name the binary asks for
//! (its soname, e.g. `liblzma.so.5`, not the file `liblzma.so.5.4.1` it links to). When the
//! loader cannot list them, the shared objects this process has mapped (`/proc/self/maps`)
//! are taken instead.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use super::{LOADER, SERVER};

/// Why the bundle could not be made.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The binary could not be read as a 64-bit little-endian ELF file.
    #[error("reading {path} as an ELF binary: {reason}")]
    Elf {
        /// The binary.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The binary is static: it names no dynamic loader.
    #[error(
        "{0} names no dynamic loader (no PT_INTERP); the node-pull server expects a dynamically linked importer binary"
    )]
    NoInterpreter(PathBuf),
    /// A file could not be copied into the bundle.
    #[error("copying {from} to {to}: {source}")]
    Copy {
        /// The file.
        from: PathBuf,
        /// Where it was going.
        to: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// One file of the bundle: where it is, and its name in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// The file on this system.
    pub from: PathBuf,
    /// Its name in the bundle directory.
    pub name: String,
}

/// The files that make `exe` runnable without the system's libraries: `exe` as
/// [`SERVER`], its loader as [`LOADER`], and its libraries by soname.
pub fn files(exe: &Path) -> Result<Vec<BundleFile>, BundleError> {
    let loader = interpreter(exe)?;
    let libraries = match Command::new(&loader).arg("--list").arg(exe).output() {
        Ok(out) if out.status.success() => parse_list(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            tracing::warn!(
                loader = %loader.display(),
                "--list failed ({}): taking the mapped libraries",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            mapped_libraries(&loader)
        }
        Err(e) => {
            tracing::warn!(loader = %loader.display(), "--list: {e}: taking the mapped libraries");
            mapped_libraries(&loader)
        }
    };
    let mut files = vec![
        BundleFile {
            from: exe.to_path_buf(),
            name: SERVER.into(),
        },
        BundleFile {
            from: loader,
            name: LOADER.into(),
        },
    ];
    for lib in libraries {
        if !files.iter().any(|f| f.name == lib.name) {
            files.push(lib);
        }
    }
    Ok(files)
}

/// Copies [`files`] of `exe` into `dir` (created if missing), each executable; returns their
/// names.
pub fn install(exe: &Path, dir: &Path) -> Result<Vec<String>, BundleError> {
    let files = files(exe)?;
    std::fs::create_dir_all(dir).map_err(|source| BundleError::Copy {
        from: exe.to_path_buf(),
        to: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::with_capacity(files.len());
    for f in files {
        let to = dir.join(&f.name);
        let copy = || -> io::Result<()> {
            // Beside the target, then renamed: a restarted init container never leaves half a
            // file under the final name.
            let partial = dir.join(format!(".{}.partial", f.name));
            std::fs::copy(&f.from, &partial)?;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&partial, &to)
        };
        copy().map_err(|source| BundleError::Copy {
            from: f.from.clone(),
            to: to.clone(),
            source,
        })?;
        names.push(f.name);
    }
    Ok(names)
}

/// The dynamic loader `exe` names (its `PT_INTERP`).
pub fn interpreter(exe: &Path) -> Result<PathBuf, BundleError> {
    let elf = |reason: String| BundleError::Elf {
        path: exe.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(exe).map_err(|e| elf(e.to_string()))?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header).map_err(|e| {
        elf(if e.kind() == io::ErrorKind::UnexpectedEof {
            "not an ELF file (shorter than an ELF header)".into()
        } else {
            format!("the ELF header: {e}")
        })
    })?;
    if &header[..4] != b"\x7fELF" {
        return Err(elf("not an ELF file".into()));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(elf("not a 64-bit little-endian ELF file".into()));
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u64_at = |b: &[u8], at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    };
    let phoff = u64_at(&header, 0x20);
    let phentsize = usize::from(u16_at(&header, 0x36));
    let phnum = usize::from(u16_at(&header, 0x38));
    if phentsize < 56 {
        return Err(elf(format!("program header entries of {phentsize} bytes")));
    }
    let mut table = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(|e| elf(format!("the program headers: {e}")))?;
    const PT_INTERP: u32 = 3;
    for entry in table.chunks_exact(phentsize) {
        let kind = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        if kind != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(entry, 0x08), u64_at(entry, 0x20));
        if size == 0 || size > 4096 {
            return Err(elf(format!("a PT_INTERP of {size} bytes")));
        }
        let mut path = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut path))
            .map_err(|e| elf(format!("PT_INTERP: {e}")))?;
        let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
        let path = String::from_utf8_lossy(&path[..end]).into_owned();
        return Ok(PathBuf::from(path));
    }
    Err(BundleError::NoInterpreter(exe.to_path_buf()))
}

/// The `name => path` lines of `ld.so --list` (the vDSO and the loader have no `=>`).
pub fn parse_list(text: &str) -> Vec<BundleFile> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(" => ")?;
            let path = rest.rsplit_once(" (").map_or(rest, |(p, _)| p).trim();
            path.starts_with('/').then(|| BundleFile {
                from: PathBuf::from(path),
                name: name.trim().to_string(),
            })
        })
        .collect()
}

/// The shared objects this process has mapped, by file name, but `loader`.
fn mapped_libraries(loader: &Path) -> Vec<BundleFile> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let loader = std::fs::canonicalize(loader).unwrap_or_else(|_| loader.to_path_buf());
    let mut found: Vec<BundleFile> = Vec::new();
    for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
        let path = Path::new(path);
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !name.contains(".so") || path == loader || found.iter().any(|f| f.name == name) {
            continue;
        }
        found.push(BundleFile {
            from: path.to_path_buf(),
            name,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_gives_sonames_and_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tliblzma.so.5 => /lib/x86_64-linux-gnu/liblzma.so.5 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\tlibmissing.so.1 => not found\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_list(text),
            [
                BundleFile {
                    from: "/lib/x86_64-linux-gnu/liblzma.so.5".into(),
                    name: "liblzma.so.5".into()
                },
                BundleFile {
                    from: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                    name: "libc.so.6".into()
                },
            ]
        );
    }

    #[test]
    fn a_non_elf_file_and_a_static_one_are_named() {
        let dir = kubevirt_testsupport::tempdir("bundle");
        let text = dir.path().join("script");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        let e = interpreter(&text).unwrap_err().to_string();
        assert!(e.contains("not an ELF file") && e.contains("script"), "{e}");
        std::fs::write(&text, format!("#!/bin/sh\n{}\n", "echo hello; ".repeat(20))).unwrap();
        let e = interpreter(&text).unwrap_err().to_string();
        assert!(e.contains("not an ELF file"), "{e}");
        // A static busybox (Debian's busybox-static) has no loader.
        let busybox = Path::new("/usr/bin/busybox");
        if busybox.is_file() && interpreter(busybox).is_err() {
            assert!(matches!(
                interpreter(busybox),
                Err(BundleError::NoInterpreter(_))
            ));
        }
    }

    /// The test binary itself, bundled, runs through the copied loader with an empty
    /// environment (it lists its tests).
    #[test]
    fn a_bundled_binary_runs_through_the_copied_loader() {
        let exe = std::env::current_exe().unwrap();
        let loader = interpreter(&exe).unwrap();
        assert!(
            loader.to_string_lossy().contains("ld-linux")
                || loader.to_string_lossy().contains("ld-"),
            "{}",
            loader.display()
        );
        let dir = kubevirt_testsupport::tempdir("bundle");
        let names = install(&exe, dir.path()).unwrap();
        assert_eq!(&names[..2], [SERVER, LOADER]);
        assert!(names.iter().any(|n| n == "libc.so.6"), "{names:?}");
        let out = Command::new(dir.path().join(LOADER))
            .env_clear()
            .arg("--library-path")
            .arg(dir.path())
            .arg(dir.path().join(SERVER))
            .args(["--list", "a_bundled_binary_runs"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("a_bundled_binary_runs"));
        // The libraries were resolved from the bundle, not the system's directories.
        let out = Command::new(dir.path().join(LOADER))
            .arg("--library-path")
            .arg(dir.path())
            .arg("--list")
            .arg(dir.path().join(SERVER))
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        let libc = listed
            .lines()
            .find(|l| l.contains("libc.so.6 =>"))
            .unwrap_or_default();
        assert!(libc.contains(&*dir.path().to_string_lossy()), "{listed}");
    }
}
