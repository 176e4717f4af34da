//! The upstream KubeVirt fixtures: `$KUBEVIRT_FIXTURES`, else `../shared/fixtures/upstream`
//! beside the workspace.

use std::path::{Path, PathBuf};

/// The fixtures directory.
///
/// # Panics
/// When it does not exist, saying how to provide it.
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("KUBEVIRT_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/upstream"),
        PathBuf::from,
    );
    assert!(
        dir.is_dir(),
        "upstream fixtures not found at {}: check out shared/ beside the workspace or set KUBEVIRT_FIXTURES",
        dir.display()
    );
    dir
}

/// The fixture file `name`.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}
