//! The pod bridge of a private containerd's CNI network on the host (`kvl0` by default). The
//! kubelet makes it with the gateway address before the runtime starts (CNI's bridge plugin
//! takes it as it is), so the API server can listen there for pods from the start, and the
//! pod CIDR's masquerade rule beside it ([`super::masquerade`]). CNI's `DEL` removes each pod's
//! veth, never the bridge itself: the kubelet removes bridge and rule when it stops the pods and
//! the runtime it started.

use std::path::Path;
use std::process::Command;

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if o.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr).trim()
    ))
}

/// Makes bridge `name` with address `gateway/len`, up, unless it is there (an existing bridge
/// gets the address if it lacks it).
pub fn ensure_bridge(name: &str, gateway: std::net::Ipv4Addr, len: u8) -> Result<(), String> {
    if !Path::new("/sys/class/net").join(name).exists() {
        ip(&["link", "add", "name", name, "type", "bridge"])?;
    }
    let addr = format!("{gateway}/{len}");
    let shown = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", name])
        .output()
        .map_err(|e| format!("running ip addr show: {e}"))?;
    if !String::from_utf8_lossy(&shown.stdout).contains(&format!(" {addr} ")) {
        ip(&["addr", "add", &addr, "dev", name])?;
    }
    ip(&["link", "set", name, "up"])
}

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
