//! `kubevirt-launcher pod-network`: the privileged half of the pod network's binding, run by the
//! node agent on the host for a launcher in its virt-launcher pod (upstream's virt-handler
//! does the same before its launcher starts the domain). It enters the pod's network namespace
//! and builds there what [`super::masquerade`] builds for a standalone launcher: the bridge
//! `k6t-eth0` with the gateway address, the guest's tap `tap0` (persistent, owned by the
//! launcher's uid, so the launcher opens it without CAP_NET_ADMIN), `ip_forward` and the
//! nftables NAT; for the bridge binding what [`super::bridge`] describes; for a non-root
//! launcher, the DHCP port bindable without a capability. The launcher then only opens the tap
//! and serves DHCP.
//!
//! Idempotent: each piece is looked at first and made only if missing, so a second run on a
//! prepared namespace changes nothing (the nftables table is left as it is, counters
//! included). A VMI without a pod network, or a namespace that cannot be entered, is refused
//! before anything is changed.

use super::masquerade::{Masquerade, NetError, command};
use crate::plan::{Binding, NetworkPlan, PlanErrors, from_vmi, vmi_of};
use crate::run::network::TAP_NAME;
use kubevirt_api::object::Object;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use thiserror::Error;

/// Why the pod network could not be prepared. [`PrepareError::is_invalid`] tells the
/// document's faults (exit code 2) from the host's (exit code 3).
#[derive(Debug, Error)]
pub enum PrepareError {
    /// The VMI cannot be planned.
    #[error("{0}")]
    Plan(#[from] PlanErrors),
    /// The VMI has no pod network interface.
    #[error(
        "spec.networks: VMI {0} has no pod network with a masquerade or bridge interface: there is nothing to prepare"
    )]
    NoPodNetwork(String),
    /// The namespace file cannot be opened.
    #[error(
        "--netns {path}: {source} (give a network namespace file such as /proc/PID/ns/net or /run/netns/NAME)"
    )]
    NetnsOpen {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// setns refused the file.
    #[error(
        "--netns {path}: entering the network namespace: {source} (is it a network namespace file, and is this process privileged?)"
    )]
    Setns {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pod interface is missing in the namespace.
    #[error("--pod-interface {iface}: no such interface in the network namespace {netns}")]
    NoPodInterface {
        /// The interface.
        iface: String,
        /// The namespace file.
        netns: PathBuf,
    },
    /// An interface named like the guest's tap exists but is not a persistent tap of the uid.
    #[error(
        "{TAP_NAME} exists in {netns} but is not a persistent tap owned by uid {owner} ({found}): remove it or give the --tap-owner it was made for"
    )]
    ForeignTap {
        /// The namespace file.
        netns: PathBuf,
        /// The wanted owner.
        owner: u32,
        /// What was found.
        found: String,
    },
    /// The pod interface's address cannot be taken over by the bridge binding.
    #[error("--pod-interface {iface}: {why}")]
    PodAddress {
        /// The interface.
        iface: String,
        /// What is missing.
        why: String,
    },
    /// A set-up step failed.
    #[error("{0}")]
    Step(#[from] NetError),
}

impl PrepareError {
    /// The VMI document is at fault (exit code 2, except [`PrepareError::NoPodNetwork`], which
    /// `pod-network` reports as nothing to do); otherwise the host is (exit code 3).
    pub fn is_invalid(&self) -> bool {
        matches!(self, PrepareError::Plan(_) | PrepareError::NoPodNetwork(_))
    }
}

/// What [`prepare`] needs besides the VMI.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The pod's network namespace file (`/proc/<launcher pid>/ns/net`).
    pub netns: PathBuf,
    /// The uid that owns the tap: the launcher's (0 in the pod the VMI controller renders).
    pub tap_owner: u32,
    /// The pod's interface (`eth0`).
    pub pod_iface: String,
}

/// What [`prepare`] changed (empty: the namespace was already prepared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// One line per change, in order.
    pub changes: Vec<String>,
}

/// Prepares the pod network of `object` (a VMI) in `opts.netns`. **Moves the calling thread
/// into that namespace for good** (the commands it runs inherit it): call it from a process
/// that does nothing else afterwards, as `kubevirt-launcher pod-network` does.
///
/// # Errors
/// [`PrepareError`]; before the namespace is entered nothing is changed, and each step only
/// adds what is missing.
pub fn prepare(object: &Object, opts: &PrepareOptions) -> Result<Prepared, PrepareError> {
    let (vmi, base) = vmi_of(object)?;
    let plan = from_vmi(&vmi, &base)?;
    let Some(network) = plan.network else {
        return Err(PrepareError::NoPodNetwork(format!(
            "{}/{}",
            plan.namespace, plan.name
        )));
    };
    enter_netns(&opts.netns)?;
    build(&network, opts)
}

/// Builds `network`'s binding in the calling thread's network namespace, adding only what is
/// missing (a standalone launcher's bridge binding uses it directly).
///
/// # Errors
/// [`PrepareError`].
pub fn build(network: &NetworkPlan, opts: &PrepareOptions) -> Result<Prepared, PrepareError> {
    if query(&["ip", "link", "show", "dev", &opts.pod_iface]).is_none() {
        return Err(PrepareError::NoPodInterface {
            iface: opts.pod_iface.clone(),
            netns: opts.netns.clone(),
        });
    }
    let mut steps = Steps::default();
    match network.binding {
        Binding::Masquerade => masquerade(&mut steps, network, opts)?,
        Binding::Bridge => super::bridge::build(&mut steps, opts)?,
    }
    if opts.tap_owner != 0 {
        dhcp_port_for_everyone(&mut steps)?;
    }
    Ok(Prepared {
        changes: steps.changes,
    })
}

/// The changes made so far; each runs one command.
#[derive(Debug, Default)]
pub(crate) struct Steps {
    changes: Vec<String>,
}

impl Steps {
    /// Runs `args` (`stdin` fed to it) and notes `what` it changed.
    pub(crate) fn change(
        &mut self,
        what: String,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(), NetError> {
        command(args, stdin)?;
        self.changes.push(what);
        Ok(())
    }
}

/// The masquerade binding: the bridge with the gateway address, the tap, forwarding, the NAT.
fn masquerade(
    steps: &mut Steps,
    network: &NetworkPlan,
    opts: &PrepareOptions,
) -> Result<(), PrepareError> {
    let mut masq = Masquerade::upstream_default(network.ports.clone());
    masq.pod_iface = opts.pod_iface.clone();
    let br = masq.bridge.clone();
    let gw = format!("{}/{}", masq.gateway, masq.prefix_len);
    bridge_with_address(steps, &br, &gw)?;
    tap_on_bridge(steps, &br, None, opts)?;
    let forward = query(&["sysctl", "-n", "net.ipv4.ip_forward"]).unwrap_or_default();
    if forward.trim() != "1" {
        steps.change(
            "net.ipv4.ip_forward=1".into(),
            &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            None,
        )?;
    }
    if query(&["nft", "list", "table", "ip", "kubevirt_rs_nat"]).is_none() {
        steps.change(
            "nftables table ip kubevirt_rs_nat".into(),
            &["nft", "-f", "-"],
            Some(&masq.ruleset()),
        )?;
    }
    Ok(())
}

/// The DHCP server's port (67) bindable by a non-root launcher with no capability: the pod's
/// network namespace's `net.ipv4.ip_unprivileged_port_start` at most 67 (per namespace; only the
/// pod's own processes are in it).
fn dhcp_port_for_everyone(steps: &mut Steps) -> Result<(), PrepareError> {
    const KEY: &str = "net.ipv4.ip_unprivileged_port_start";
    let now = query(&["sysctl", "-n", KEY]).unwrap_or_default();
    if now
        .trim()
        .parse::<u32>()
        .is_ok_and(|p| p <= DHCP_SERVER_PORT)
    {
        return Ok(());
    }
    let set = format!("{KEY}={DHCP_SERVER_PORT}");
    steps.change(set.clone(), &["sysctl", "-q", "-w", &set], None)?;
    Ok(())
}

/// The port the launcher's DHCP server listens on.
const DHCP_SERVER_PORT: u32 = 67;

/// The bridge `br`, holding `address` (`a.b.c.d/len`).
pub(crate) fn bridge_with_address(
    steps: &mut Steps,
    br: &str,
    address: &str,
) -> Result<(), PrepareError> {
    if query(&["ip", "link", "show", "dev", br]).is_none() {
        steps.change(
            format!("bridge {br}"),
            &["ip", "link", "add", br, "type", "bridge"],
            None,
        )?;
    }
    let addrs = query(&["ip", "-o", "-4", "addr", "show", "dev", br]).unwrap_or_default();
    if !addrs.split_whitespace().any(|w| w == address) {
        steps.change(
            format!("address {address} on {br}"),
            &["ip", "addr", "add", address, "dev", br],
            None,
        )?;
    }
    Ok(())
}

/// The guest's persistent tap, owned by `opts.tap_owner`, on `br` (with `mtu` if given), and
/// both up.
pub(crate) fn tap_on_bridge(
    steps: &mut Steps,
    br: &str,
    mtu: Option<u32>,
    opts: &PrepareOptions,
) -> Result<(), PrepareError> {
    match query(&["ip", "-j", "-d", "link", "show", "dev", TAP_NAME]) {
        Some(json) => check_tap(&json, opts)?,
        None => {
            let owner = opts.tap_owner.to_string();
            steps.change(
                format!("tap {TAP_NAME} (persistent, owner uid {owner})"),
                &[
                    "ip", "tuntap", "add", "dev", TAP_NAME, "mode", "tap", "user", &owner,
                    "vnet_hdr",
                ],
                None,
            )?;
        }
    }
    if let Some(mtu) = mtu {
        let now = query(&["ip", "-j", "link", "show", "dev", TAP_NAME])
            .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
            .and_then(|v| v[0]["mtu"].as_u64());
        if now != Some(u64::from(mtu)) {
            let text = mtu.to_string();
            steps.change(
                format!("{TAP_NAME} mtu {mtu}"),
                &["ip", "link", "set", "dev", TAP_NAME, "mtu", &text],
                None,
            )?;
        }
    }
    let link = query(&["ip", "-o", "link", "show", "dev", TAP_NAME]).unwrap_or_default();
    if !link.contains(&format!(" master {br} ")) {
        steps.change(
            format!("{TAP_NAME} on {br}"),
            &["ip", "link", "set", TAP_NAME, "master", br],
            None,
        )?;
    }
    for dev in [br, TAP_NAME] {
        let flags = query(&["ip", "-o", "link", "show", "dev", dev]).unwrap_or_default();
        if !flags.contains(",UP") && !flags.contains("<UP") {
            steps.change(format!("{dev} up"), &["ip", "link", "set", dev, "up"], None)?;
        }
    }
    Ok(())
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_netns(path: &Path) -> Result<(), PrepareError> {
    let file = std::fs::File::open(path).map_err(|source| PrepareError::NetnsOpen {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: setns with a descriptor this function owns and a namespace type: it only moves
    // the calling thread (the kernel refuses a file that is not a network namespace).
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(PrepareError::Setns {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A command's standard output when it succeeds (a look, never a change).
pub(crate) fn query(args: &[&str]) -> Option<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The user name `ip` shows for `uid` (it prints names where it can).
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r writes at most buf.len()
    // bytes of strings into buf, which outlives every use of the result.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are to live locals sized as passed.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points to a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Checks an existing `tap0` (`ip -j -d link show`) is the persistent tap `opts` asks for.
fn check_tap(json: &str, opts: &PrepareOptions) -> Result<(), PrepareError> {
    let links: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let info = &links[0]["linkinfo"];
    let data = &info["info_data"];
    let user = match &data["user"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let owner_ok = user == opts.tap_owner.to_string()
        || user_name(opts.tap_owner).is_some_and(|name| name == user);
    let ok = info["info_kind"] == "tun" && data["type"] == "tap" && data["persist"] == true;
    if ok && owner_ok {
        return Ok(());
    }
    Err(PrepareError::ForeignTap {
        netns: opts.netns.clone(),
        owner: opts.tap_owner,
        found: format!(
            "kind {}, type {}, persist {}, user {user:?}",
            info["info_kind"], data["type"], data["persist"]
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(owner: u32) -> PrepareOptions {
        PrepareOptions {
            netns: "/proc/1/ns/net".into(),
            tap_owner: owner,
            pod_iface: "eth0".into(),
        }
    }

    #[test]
    fn an_existing_tap_must_be_persistent_and_owned_by_the_uid() {
        let tap = |persist: bool, user: &str| {
            format!(
                r#"[{{"ifname":"tap0","linkinfo":{{"info_kind":"tun","info_data":{{"type":"tap","persist":{persist},"user":"{user}"}}}}}}]"#
            )
        };
        check_tap(&tap(true, "root"), &opts(0)).unwrap();
        check_tap(&tap(true, "107"), &opts(107)).unwrap();
        let e = check_tap(&tap(false, "root"), &opts(0)).unwrap_err();
        assert!(e.to_string().contains("persist false"), "{e}");
        let e = check_tap(&tap(true, "root"), &opts(107)).unwrap_err();
        assert!(e.to_string().contains("uid 107"), "{e}");
        let veth = r#"[{"ifname":"tap0","linkinfo":{"info_kind":"veth"}}]"#;
        assert!(check_tap(veth, &opts(0)).is_err());
    }
}
