//! Users other than the administrator, for the RBAC and client-certificate tests: a kubeconfig
//! from `kubevirt-local kubeconfig --user`, kubectl as that user, and `kubectl auth can-i`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `kubevirt-local kubeconfig --data-dir DATA --user NAME [--group G]... [extra]`, written to a
/// file of its own under `data` (a new one each call, so two calls for one user never share it).
pub fn user_kubeconfig(data: &Path, user: &str, groups: &[&str], extra: &[&str]) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"));
    cmd.arg("kubeconfig")
        .arg("--data-dir")
        .arg(data)
        .args(["--user", user]);
    for g in groups {
        cmd.args(["--group", g]);
    }
    let out = cmd
        .args(extra)
        .output()
        .expect("run kubevirt-local kubeconfig");
    assert!(
        out.status.success(),
        "kubevirt-local kubeconfig --user {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = data.join(format!("user-{user}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("user dir");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, &out.stdout).expect("write kubeconfig");
    path
}

/// kubectl with `kubeconfig`, bounded in time.
pub fn as_user(kubeconfig: &Path, args: &[&str]) -> Output {
    let args: Vec<&str> = ["--request-timeout=20s"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    kubevirt_testsupport::kubectl(kubeconfig, &args, None)
}

/// A command's stdout, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A command's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `kubectl auth can-i ARGS` as `kubeconfig`: yes or no; anything else fails the test.
pub fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = as_user(kubeconfig, &all);
    match stdout(&out).as_str() {
        "yes" => true,
        "no" => false,
        other => panic!("can-i {args:?}: {other:?} {}", stderr(&out)),
    }
}
