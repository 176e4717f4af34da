//! The shared-library closure of a host binary, so an image built from host files runs: whether an
//! ELF file is dynamically linked (it has a `PT_DYNAMIC` segment) is read from its program
//! headers; its libraries and ELF interpreter are what the host's dynamic loader resolves for it,
//! as `ldd` prints them (the loader's own search: `DT_RPATH`/`DT_RUNPATH`, `ld.so.cache`, the
//! default directories), so the image gets exactly the files the binary loads on this host.

use std::path::{Path, PathBuf};

/// `PT_DYNAMIC`: the segment holding the dynamic section (`DT_NEEDED`, ...).
const PT_DYNAMIC: u32 = 2;
/// `PT_INTERP`: the path of the ELF interpreter (the dynamic loader).
const PT_INTERP: u32 = 3;

/// Why a binary's libraries could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ldd` could not be run.
    #[error("running ldd on {path} (package libc-bin): {source}")]
    Ldd {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The dynamic loader cannot find a library the binary needs.
    #[error("{path} needs {library}, which this host's dynamic loader does not find")]
    Missing {
        /// The binary.
        path: PathBuf,
        /// The library's name (`DT_NEEDED`).
        library: String,
    },
    /// `ldd` failed on a file the program headers say is dynamic.
    #[error("ldd {path} failed: {message}")]
    Failed {
        /// The binary.
        path: PathBuf,
        /// What ldd said.
        message: String,
    },
}

fn u16_at(b: &[u8], at: usize, little: bool) -> Option<u16> {
    let raw: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if little {
        u16::from_le_bytes(raw)
    } else {
        u16::from_be_bytes(raw)
    })
}

fn u32_at(b: &[u8], at: usize, little: bool) -> Option<u32> {
    let raw: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(raw)
    } else {
        u32::from_be_bytes(raw)
    })
}

fn u64_at(b: &[u8], at: usize, little: bool) -> Option<u64> {
    let raw: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(if little {
        u64::from_le_bytes(raw)
    } else {
        u64::from_be_bytes(raw)
    })
}

/// The program header types of an ELF file (`None`: not an ELF file, or a truncated one). `head`
/// must hold the file up to the end of its program header table.
fn segment_types(head: &[u8]) -> Option<Vec<u32>> {
    if head.get(..4)? != b"\x7fELF" {
        return None;
    }
    let wide = match head.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match head.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if wide {
        (
            usize::try_from(u64_at(head, 0x20, little)?).ok()?,
            usize::from(u16_at(head, 0x36, little)?),
            usize::from(u16_at(head, 0x38, little)?),
        )
    } else {
        (
            usize::try_from(u32_at(head, 0x1c, little)?).ok()?,
            usize::from(u16_at(head, 0x2a, little)?),
            usize::from(u16_at(head, 0x2c, little)?),
        )
    };
    if phentsize < 4 {
        return None;
    }
    (0..phnum)
        .map(|i| u32_at(head, phoff.checked_add(i.checked_mul(phentsize)?)?, little))
        .collect()
}

/// Whether `head` (the start of a file) is a dynamically linked ELF object: an executable with
/// an interpreter or a shared library. Static executables, scripts and data are not.
pub fn is_dynamic(head: &[u8]) -> bool {
    segment_types(head).is_some_and(|t| t.contains(&PT_DYNAMIC) || t.contains(&PT_INTERP))
}

/// How much of a file [`is_dynamic`] needs at most (the ELF header and a program header table of
/// a normal size); a longer table reads as not dynamic.
const HEAD: u64 = 64 * 1024;

/// What `ldd` printed, as the files the loader maps: each resolved library (`name => /path
/// (addr)`) and the interpreter (`/path (addr)`), in order; the vDSO (no path) is skipped. A
/// library ldd reports `not found` is an error naming it.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") || line.contains("not a dynamic executable") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(name.trim().to_string());
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') && !files.iter().any(|f: &PathBuf| f == Path::new(path)) {
            files.push(PathBuf::from(path));
        }
    }
    Ok(files)
}

/// The libraries and interpreter `path` loads on this host (empty for a static binary or a file
/// that is not ELF), as absolute paths on the host.
pub fn closure(path: &Path) -> Result<Vec<PathBuf>, ClosureError> {
    use std::io::Read;
    let read = |source| ClosureError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(HEAD)
        .read_to_end(&mut head)
        .map_err(read)?;
    if !is_dynamic(&head) {
        return Ok(Vec::new());
    }
    let out = std::process::Command::new("ldd")
        .arg(path)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| ClosureError::Ldd {
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let files = parse_ldd(&text).map_err(|library| ClosureError::Missing {
        path: path.to_path_buf(),
        library,
    })?;
    if !out.status.success() && files.is_empty() {
        return Err(ClosureError::Failed {
            path: path.to_path_buf(),
            message: format!(
                "{} {}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd2f5f4000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1c)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1b)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f1d)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            parse_ldd("\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n"),
            Err("libfoo.so.1".to_string())
        );
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        // This test binary is dynamically linked (Rust's default on glibc).
        let me = std::env::current_exe().unwrap();
        let libs = closure(&me).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter().all(|l| l.is_absolute() && l.exists()),
            "{libs:?}"
        );
        assert!(!is_dynamic(b"#!/bin/sh\necho hi\n"));
        assert!(!is_dynamic(b"\x7fELF"));
        assert!(!is_dynamic(b""));
        let busybox = Path::new("/usr/bin/busybox");
        if busybox.exists() {
            // Debian's busybox-static.
            assert_eq!(closure(busybox).unwrap(), Vec::<PathBuf>::new());
        }
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                               text in ".{0,200}") {
            let _ = is_dynamic(&bytes);
            let mut elf = b"\x7fELF\x02\x01".to_vec();
            elf.extend_from_slice(&bytes);
            let _ = is_dynamic(&elf);
            let _ = parse_ldd(&text);
        }
    }

    #[test]
    fn truncated_program_headers_are_not_dynamic() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(is_dynamic(&me[..4096]));
        assert!(!is_dynamic(&me[..0x40]));
    }
}
