//! Host processes a test looks for: launchers that must (or must not) still run.

use std::path::Path;

/// Whether process `pid` runs; a zombie (exited, not reaped yet) does not.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The live `kubevirt-launcher` processes whose command line names `dir` (a run or data
/// directory).
pub fn launchers_in(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                c.contains("kubevirt-launcher") && c.contains(&needle)
            })
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_no_launcher_names_a_fresh_dir() {
        assert!(process_alive(std::process::id()));
        let dir = crate::tempdir("no-launchers");
        assert!(launchers_in(&dir).is_empty());
    }
}
