//! Which OCI runtime the private containerd's runc shim executes: runc, or crun where the host
//! allows it.
//!
//! Every container a pod starts costs the runtime binary's executions (create, start, delete,
//! the container's init): runc is a Go program whose start-up, mount table parsing and binary
//! self-copy cost ~26 ms of CPU a `runc run` on the development machine, crun ~4-8 ms. A VM's
//! launcher pod has three containers (pause, compute, guest-console-log), so on a 2-core node
//! starting VMs at a steady rate the runtime binary was the largest single consumer of CPU
//! (docs/PERFORMANCE.md). Both are driven by containerd's `io.containerd.runc.v2` shim, which
//! takes the binary by name (`BinaryName`); the OCI spec containerd writes is the same.
//!
//! crun refuses every container on a hybrid cgroup host whose unified (v2) hierarchy has a
//! controller bound to it ("cgroups in hybrid mode not supported, drop all controllers from
//! cgroupv2"); `auto` then keeps runc and says why.

use std::path::{Path, PathBuf};

/// Which runtime was asked for (`--oci-runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OciRuntimeChoice {
    /// crun when it is installed and the host's cgroups suit it, else runc.
    #[default]
    Auto,
    /// Always runc.
    Runc,
    /// Always crun; an error when it is missing or the host's cgroups refuse it.
    Crun,
}

impl std::str::FromStr for OciRuntimeChoice {
    type Err = OciRuntimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "runc" => Ok(Self::Runc),
            "crun" => Ok(Self::Crun),
            other => Err(OciRuntimeError::Unknown(other.to_string())),
        }
    }
}

/// Why a runtime cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OciRuntimeError {
    /// Not one of the names.
    #[error("--oci-runtime {0:?} is not one of auto, runc, crun")]
    Unknown(String),
    /// `crun` was asked for and is not on PATH.
    #[error("--oci-runtime crun: no crun binary on PATH (install Debian's crun, or use runc)")]
    CrunMissing,
    /// `crun` was asked for and the host's cgroups refuse it.
    #[error("--oci-runtime crun: {0}")]
    CrunRefused(String),
}

/// The runtime the node uses: the name of containerd's runtime handler and the binary its shim
/// runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRuntime {
    /// The runtime handler's name in containerd's configuration (`runc` or `crun`).
    pub name: &'static str,
    /// The binary; `None` for the shim's default (`runc` on PATH).
    pub binary: Option<PathBuf>,
}

impl OciRuntime {
    /// runc, the shim's default binary.
    pub fn runc() -> Self {
        Self {
            name: "runc",
            binary: None,
        }
    }

    /// crun at `binary`.
    pub fn crun(binary: PathBuf) -> Self {
        Self {
            name: "crun",
            binary: Some(binary),
        }
    }
}

/// Decides the runtime for `choice` on this host: `path` is the search path for `crun`,
/// `cgroup_root` the cgroup mount (`/sys/fs/cgroup`). Returns the runtime and, when `auto`
/// fell back to runc, why.
pub fn resolve(
    choice: OciRuntimeChoice,
    path: Option<&std::ffi::OsStr>,
    cgroup_root: &Path,
) -> Result<(OciRuntime, Option<String>), OciRuntimeError> {
    if choice == OciRuntimeChoice::Runc {
        return Ok((OciRuntime::runc(), None));
    }
    let crun = crate::programs::find_program("crun", path);
    let checked = match crun {
        None => Err(OciRuntimeError::CrunMissing),
        Some(bin) => match crun_refusal(cgroup_root) {
            Some(why) => Err(OciRuntimeError::CrunRefused(why)),
            None => Ok(OciRuntime::crun(bin)),
        },
    };
    match (choice, checked) {
        (_, Ok(rt)) => Ok((rt, None)),
        (OciRuntimeChoice::Crun, Err(e)) => Err(e),
        (_, Err(e)) => Ok((OciRuntime::runc(), Some(e.to_string()))),
    }
}

/// Why crun would refuse containers on the cgroup layout under `root`, if it would: a hybrid
/// layout (v1 hierarchies on a tmpfs, the unified hierarchy at `unified/`) whose unified
/// hierarchy has controllers.
pub fn crun_refusal(root: &Path) -> Option<String> {
    let controllers = std::fs::read_to_string(root.join("unified/cgroup.controllers")).ok()?;
    let bound: Vec<&str> = controllers.split_whitespace().collect();
    (!bound.is_empty()).then(|| {
        format!(
            "the host's cgroups are hybrid and the unified hierarchy holds {} (crun refuses every \
             container then); bind them to v1 hierarchies as scripts/setup.sh does \
             (mount -t cgroup -o CONTROLLER cgroup {}/CONTROLLER)",
            bound.join(", "),
            root.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dirs(PathBuf);
    impl Dirs {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("kv-oci-rt-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(d.join("bin")).unwrap();
            std::fs::create_dir_all(d.join("cgroup/unified")).unwrap();
            Self(d)
        }
        fn install_crun(&self) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let f = self.0.join("bin/crun");
            std::fs::write(&f, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
            f
        }
        fn v2_controllers(&self, text: &str) {
            std::fs::write(self.0.join("cgroup/unified/cgroup.controllers"), text).unwrap();
        }
        fn resolve(
            &self,
            choice: OciRuntimeChoice,
        ) -> Result<(OciRuntime, Option<String>), OciRuntimeError> {
            let path =
                std::env::join_paths([PathBuf::from("/nonexistent"), self.0.join("bin")]).unwrap();
            resolve(choice, Some(&path), &self.0.join("cgroup"))
        }
    }
    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn auto_takes_crun_when_it_is_there_and_the_cgroups_suit_it() {
        let d = Dirs::new("ok");
        let bin = d.install_crun();
        d.v2_controllers("\n");
        assert_eq!(
            d.resolve(OciRuntimeChoice::Auto).unwrap(),
            (OciRuntime::crun(bin.clone()), None)
        );
        assert_eq!(
            d.resolve(OciRuntimeChoice::Crun).unwrap().0,
            OciRuntime::crun(bin)
        );
        assert_eq!(
            d.resolve(OciRuntimeChoice::Runc).unwrap(),
            (OciRuntime::runc(), None)
        );
    }

    #[test]
    fn a_pure_v2_or_v1_host_suits_crun() {
        // No `unified/` below the root: the root is the unified hierarchy, or there is none.
        let d = Dirs::new("v2");
        d.install_crun();
        std::fs::remove_dir_all(d.0.join("cgroup/unified")).unwrap();
        assert_eq!(d.resolve(OciRuntimeChoice::Auto).unwrap().0.name, "crun");
    }

    #[test]
    fn auto_falls_back_to_runc_and_says_why() {
        let d = Dirs::new("fallback");
        let (rt, why) = d.resolve(OciRuntimeChoice::Auto).unwrap();
        assert_eq!(rt, OciRuntime::runc());
        assert!(why.unwrap().contains("no crun binary"));
        d.install_crun();
        d.v2_controllers("hugetlb\n");
        let (rt, why) = d.resolve(OciRuntimeChoice::Auto).unwrap();
        assert_eq!(rt, OciRuntime::runc());
        assert!(why.unwrap().contains("holds hugetlb"));
    }

    #[test]
    fn crun_asked_for_and_refused_is_an_error_naming_why() {
        let d = Dirs::new("refused");
        assert_eq!(
            d.resolve(OciRuntimeChoice::Crun),
            Err(OciRuntimeError::CrunMissing)
        );
        d.install_crun();
        d.v2_controllers("hugetlb misc\n");
        let err = d.resolve(OciRuntimeChoice::Crun).unwrap_err().to_string();
        assert!(err.contains("holds hugetlb, misc"), "{err}");
        let err = "kata".parse::<OciRuntimeChoice>().unwrap_err().to_string();
        assert!(
            err.contains("\"kata\" is not one of auto, runc, crun"),
            "{err}"
        );
    }
}
