//! The pod network's way out: one masquerade rule for the whole pod CIDR, in an nftables table
//! of the node's own (`kubevirt_local_<bridge>`), made with the bridge and removed with it.
//!
//! CNI's bridge plugin can masquerade too (`ipMasq`), but per pod: every sandbox's `ADD` runs
//! iptables to make a chain and two rules for that pod's address, and its `DEL` removes them,
//! each under the xtables lock, so sandboxes made together queue on it. That was half of the
//! CNI's CPU in a VM start (docs/PERFORMANCE.md); one rule written once costs nothing a pod. The
//! rule is what the plugin's rules amount to: traffic from a pod to outside the pod network,
//! multicast excepted, leaves with the host's address.

use std::io::Write;
use std::process::{Command, Stdio};

/// The node's nftables table for `bridge` (nft names take no '-').
pub fn table_name(bridge: &str) -> String {
    format!("kubevirt_local_{}", bridge.replace('-', "_"))
}

/// The nft script that (re)makes the table: idempotent, so a restart over a running node
/// rewrites the same rule.
pub fn script(bridge: &str, cidr: &str) -> String {
    let t = table_name(bridge);
    format!(
        "table ip {t} {{}}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority 100; policy accept;\n\
         \t\tip saddr {cidr} ip daddr != {cidr} ip daddr != 224.0.0.0/4 masquerade\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft (package nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let o = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if o.status.success() {
        return Ok(());
    }
    Err(format!(
        "nft: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    ))
}

/// Makes (or remakes) the masquerade rule for pods on `bridge` in `cidr` (checked by the
/// caller: `a.b.c.d/n`).
pub fn ensure_masquerade(bridge: &str, cidr: &str) -> Result<(), String> {
    nft(&script(bridge, cidr))
}

/// Removes the table of `bridge` if it is there. A failure is logged: the next start remakes it.
pub fn remove_masquerade(bridge: &str) {
    let t = table_name(bridge);
    if let Err(e) = nft(&format!("table ip {t} {{}}\ndelete table ip {t}\n")) {
        tracing::warn!(bridge, error = %e, "removing the pod network's masquerade table");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_named_for_the_bridge_and_masquerades_the_cidr_only_outwards() {
        assert_eq!(table_name("kv-node_1"), "kubevirt_local_kv_node_1");
        let s = script("kvl0", "10.88.0.0/16");
        assert!(
            s.starts_with("table ip kubevirt_local_kvl0 {}\ndelete table ip kubevirt_local_kvl0\n")
        );
        assert!(s.contains(
            "ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 ip daddr != 224.0.0.0/4 masquerade"
        ));
    }

    /// Against the kernel's nftables (root): made twice (a restart), one rule; removed, gone.
    #[test]
    fn the_rule_is_made_once_and_removed_with_the_table() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("nft").arg("-v").output().is_err() {
            eprintln!("skipped: needs root and nft");
            return;
        }
        let bridge = format!("kvt{}", std::process::id() % 100_000);
        let list = || {
            Command::new("nft")
                .args(["list", "table", "ip", &table_name(&bridge)])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        ensure_masquerade(&bridge, "10.250.0.0/24").unwrap();
        ensure_masquerade(&bridge, "10.250.0.0/24").unwrap();
        let shown = list();
        remove_masquerade(&bridge);
        assert_eq!(shown.matches("masquerade").count(), 1, "{shown}");
        assert!(shown.contains("ip saddr 10.250.0.0/24"), "{shown}");
        assert_eq!(list(), "", "the table is gone");
        let err = ensure_masquerade(&bridge, "not a cidr").unwrap_err();
        remove_masquerade(&bridge);
        assert!(err.starts_with("nft: "), "{err}");
    }
}
