//! The real kubectl, against a kubeconfig, with a cache directory beside it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `kubectl ARGS` with `KUBECONFIG=kubeconfig`, its cache in `kubectl-cache` beside the
/// kubeconfig, and `stdin` written to its standard input.
///
/// # Panics
/// When kubectl cannot be started (it is not installed).
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(kubeconfig.with_file_name("kubectl-cache"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed (run scripts/setup.sh)");
    if let (Some(s), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(s.as_bytes()).expect("write kubectl's stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for kubectl")
}
