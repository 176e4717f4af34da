//! Binaries of other packages that a test runs as a user would: built with cargo (a no-op when
//! they are fresh) into the same target directory as the running test.
//!
//! The build is `cargo build --workspace --bin NAME`: the whole workspace's feature set, as
//! `cargo build --workspace --bins` makes it. `-p PACKAGE` would resolve the package's features
//! alone and build a second copy of its dependency tree (minutes on a fresh machine).
//! `scripts/run-tests.py` builds every test with `cargo test --workspace --no-run`, which puts
//! the binaries of the packages with integration tests in the target directory too, and sets
//! [`PREBUILT`]: the tests then take those binaries as they are and run no cargo at all (a cargo
//! of the other feature set would rebuild and replace them while other tests run them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which cargo profile to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `dev` (tests).
    Debug,
    /// `bench`, i.e. `release`'s settings in `target/release` (benchmarks).
    Release,
}

/// Builds `kubevirt-launcher` and returns its path in the running executable's target
/// directory (`target/<profile>/`).
///
/// # Panics
/// When the build fails or the binary is not where cargo puts it.
pub fn launcher_binary(profile: Profile) -> PathBuf {
    workspace_binary("kubevirt-launcher", "kubevirt-launcher", profile)
}

/// Builds `kubevirt-controller` (the importer image of `kubevirt-local up` is made of it) and
/// returns its path in the running executable's target directory.
///
/// # Panics
/// When the build fails or the binary is not where cargo puts it.
pub fn controller_binary(profile: Profile) -> PathBuf {
    workspace_binary("kubevirt-controller", "kubevirt-controller", profile)
}

/// Builds `virtctl` and returns its path in the running executable's target directory.
///
/// # Panics
/// When the build fails or the binary is not where cargo puts it.
pub fn virtctl_binary(profile: Profile) -> PathBuf {
    workspace_binary("kubevirt-controller", "virtctl", profile)
}

/// Set (to anything) by `scripts/run-tests.py` once it has built the tests: the debug binaries
/// are in the target directory, built with them; [`Profile::Debug`] binaries are not rebuilt.
pub const PREBUILT: &str = "KUBEVIRT_TEST_BINARIES_BUILT";

/// Whether cargo sets `key` in a test's or bench's environment (the package's and target's
/// facts), as opposed to a setting of the user's.
fn set_for_the_running_target(key: &str) -> bool {
    const EXACT: [&str; 9] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    EXACT.contains(&key) || key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_BIN_EXE_")
}

fn workspace_binary(package: &str, bin: &str, profile: Profile) -> PathBuf {
    if profile == Profile::Release || std::env::var_os(PREBUILT).is_none() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo.args(["build", "--quiet", "--workspace", "--bin", bin]);
        if profile == Profile::Release {
            // `cargo bench`'s own profile (`bench`: the `release` settings, output in
            // target/release), so the binary is built as the bench that asks for it is.
            cargo.args(["--profile", "bench"]);
        }
        // What cargo set for the running test or bench is no setting of this build; a build
        // script that watches one (ring's `rerun-if-env-changed=CARGO_MANIFEST_DIR`) would
        // see it change and rebuild half the workspace, and the next `cargo bench` back.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(set_for_the_running_target) {
                cargo.env_remove(key);
            }
        }
        let status = cargo.current_dir(root).status().expect("run cargo");
        assert!(
            status.success(),
            "building {bin} (package {package}) failed"
        );
    }
    // Tests and benches run from target/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join(bin);
    assert!(path.exists(), "no {bin} at {}", path.display());
    path
}

#[cfg(test)]
mod tests {
    use super::set_for_the_running_target;

    #[test]
    fn only_what_cargo_set_for_the_target_is_dropped() {
        for key in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_virtctl",
            "OUT_DIR",
        ] {
            assert!(set_for_the_running_target(key), "{key}");
        }
        for key in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
            "RUSTFLAGS",
        ] {
            assert!(!set_for_the_running_target(key), "{key}");
        }
    }
}
