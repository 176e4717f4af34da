//! The pod bridge a private containerd's CNI network creates on the host (`kvl0` by default).
//! CNI's `DEL` removes each pod's veth and masquerade rules, never the bridge itself: the
//! kubelet removes it when it stops the pods and the runtime it started.

use std::path::Path;
use std::process::Command;

/// Removes bridge `name` if it exists. A failure is logged: the next start reuses the bridge.
pub fn remove_bridge(name: &str) {
    if !Path::new("/sys/class/net").join(name).exists() {
        return;
    }
    match Command::new("ip")
        .args(["link", "del", "dev", name])
        .output()
    {
        Ok(o) if o.status.success() => tracing::info!(bridge = name, "pod bridge removed"),
        Ok(o) => tracing::warn!(
            bridge = name,
            error = %String::from_utf8_lossy(&o.stderr).trim(),
            "removing the pod bridge"
        ),
        Err(e) => tracing::warn!(bridge = name, error = %e, "running ip to remove the pod bridge"),
    }
}
