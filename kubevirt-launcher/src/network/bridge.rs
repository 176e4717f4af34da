//! The pod network's bridge binding (`bridge: {}`), as upstream builds it: the pod's interface
//! (`eth0`) and the guest's tap on a bridge `k6t-eth0`, the pod's IPv4 address taken off
//! `eth0` and handed to the guest by DHCP with the pod's default gateway, MTU and MAC (`eth0`
//! gets another MAC so the two never clash), the DHCP server on the bridge's link-local
//! 169.254.75.10/32. No NAT: the guest is the pod on the wire.
//!
//! Taking the address off `eth0` loses it, so what the guest needs (address, prefix, gateway,
//! MAC, MTU) is recorded first in the bridge's alias (`ip link set k6t-eth0 alias ...`): a
//! second `pod-network` run finds it there instead of on `eth0`, and the launcher reads it
//! from the bridge without any privilege.

use super::prepare::{
    PrepareError, PrepareOptions, Steps, bridge_with_address, query, tap_on_bridge,
};
use std::net::Ipv4Addr;

/// The bridge, as upstream names it for `eth0`.
pub const BRIDGE: &str = "k6t-eth0";
/// The DHCP server's address on the bridge (upstream's).
pub const DHCP_SERVER_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 75, 10);
const ALIAS: &str = "kubevirt-rs bridge binding:";

/// What the pod's interface had, and the guest now has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddress {
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The pod's default gateway.
    pub gateway: Ipv4Addr,
    /// The pod interface's MAC (the guest's unless the VMI names one).
    pub mac: [u8; 6],
    /// The pod interface's MTU.
    pub mtu: u32,
}

fn format_mac(mac: &[u8; 6]) -> String {
    kubevirt_vmm::virtio::net::device::format_mac(mac)
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl PodAddress {
    /// The bridge's alias recording it.
    pub fn to_alias(&self) -> String {
        format!(
            "{ALIAS} ip {}/{} gateway {} mac {} mtu {}",
            self.ip,
            self.prefix_len,
            self.gateway,
            format_mac(&self.mac),
            self.mtu
        )
    }

    /// Reads [`PodAddress::to_alias`]'s text back.
    pub fn from_alias(text: &str) -> Option<Self> {
        let words: Vec<&str> = text
            .trim()
            .strip_prefix(ALIAS)?
            .split_whitespace()
            .collect();
        let ["ip", cidr, "gateway", gw, "mac", mac, "mtu", mtu] = words.as_slice() else {
            return None;
        };
        let (ip, len) = cidr.split_once('/')?;
        Some(PodAddress {
            ip: ip.parse().ok()?,
            prefix_len: len.parse().ok().filter(|l| *l <= 32)?,
            gateway: gw.parse().ok()?,
            mac: parse_mac(mac)?,
            mtu: mtu.parse().ok()?,
        })
    }

    /// The MAC the pod's interface gets once the guest has its own: the same with the
    /// locally administered bit set and the last byte inverted (never equal to it).
    pub fn pod_side_mac(&self) -> [u8; 6] {
        let mut mac = self.mac;
        mac[0] = (mac[0] | 0x02) & !0x01;
        mac[5] ^= 0xff;
        mac
    }
}

/// What the bridge's alias records, read through sysfs without privilege. `None`: no bridge,
/// or not one `pod-network` made. The sysfs entry must be this namespace's (its ifindex is the
/// kernel's answer for the name here).
pub fn recorded() -> Option<PodAddress> {
    let dir = std::path::Path::new("/sys/class/net").join(BRIDGE);
    let index: u32 = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let name = std::ffi::CString::new(BRIDGE).ok()?;
    // SAFETY: a NUL-terminated string that outlives the call; if_nametoindex only reads it.
    if unsafe { libc::if_nametoindex(name.as_ptr()) } != index {
        return None;
    }
    PodAddress::from_alias(&std::fs::read_to_string(dir.join("ifalias")).ok()?)
}

/// What `ip -j` says about a link (`{}` when it does not exist).
fn link(dev: &str) -> serde_json::Value {
    query(&["ip", "-j", "-d", "link", "show", "dev", dev])
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .map(|v| v[0].clone())
        .unwrap_or_default()
}

/// The pod interface's IPv4 address, gateway, MAC and MTU, before the binding takes them.
fn of_pod_interface(iface: &str) -> Result<PodAddress, PrepareError> {
    let missing = |why: &str| PrepareError::PodAddress {
        iface: iface.to_string(),
        why: why.to_string(),
    };
    let addrs: serde_json::Value = query(&["ip", "-j", "-4", "addr", "show", "dev", iface])
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let info = addrs[0]["addr_info"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["scope"] == "global"))
        .ok_or_else(|| {
            missing("has no global IPv4 address to give the guest (the bridge binding takes the pod's address)")
        })?;
    let ip = info["local"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| missing("its IPv4 address cannot be read"))?;
    let prefix_len = info["prefixlen"]
        .as_u64()
        .and_then(|l| u8::try_from(l).ok())
        .ok_or_else(|| missing("its prefix length cannot be read"))?;
    let routes: serde_json::Value =
        query(&["ip", "-j", "-4", "route", "show", "default", "dev", iface])
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
    let gateway = routes[0]["gateway"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| missing("has no default route through a gateway to give the guest"))?;
    let l = link(iface);
    let mac = l["address"]
        .as_str()
        .and_then(parse_mac)
        .ok_or_else(|| missing("its MAC address cannot be read"))?;
    let mtu = l["mtu"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(1500);
    Ok(PodAddress {
        ip,
        prefix_len,
        gateway,
        mac,
        mtu,
    })
}

/// Builds the bridge binding in this namespace, adding only what is missing.
pub(crate) fn build(steps: &mut Steps, opts: &PrepareOptions) -> Result<(), PrepareError> {
    let eth = opts.pod_iface.as_str();
    let addr = match recorded_by_ip() {
        Some(a) => a,
        None => of_pod_interface(eth)?,
    };
    bridge_with_address(steps, BRIDGE, &format!("{DHCP_SERVER_IP}/32"))?;
    if recorded_by_ip() != Some(addr) {
        steps.change(
            format!("the pod's address recorded on {BRIDGE}"),
            &[
                "ip",
                "link",
                "set",
                "dev",
                BRIDGE,
                "alias",
                &addr.to_alias(),
            ],
            None,
        )?;
    }
    let cidr = format!("{}/{}", addr.ip, addr.prefix_len);
    let eth_addrs = query(&["ip", "-o", "-4", "addr", "show", "dev", eth]).unwrap_or_default();
    if eth_addrs.split_whitespace().any(|w| w == cidr) {
        steps.change(
            format!("{cidr} taken off {eth} (the guest's now)"),
            &["ip", "addr", "del", &cidr, "dev", eth],
            None,
        )?;
    }
    let pod_mac = format_mac(&addr.pod_side_mac());
    if link(eth)["address"].as_str() != Some(pod_mac.as_str()) {
        steps.change(
            format!(
                "{eth} mac {pod_mac} (the guest takes {})",
                format_mac(&addr.mac)
            ),
            &["ip", "link", "set", "dev", eth, "address", &pod_mac],
            None,
        )?;
    }
    if link(eth)["master"].as_str() != Some(BRIDGE) {
        steps.change(
            format!("{eth} on {BRIDGE}"),
            &["ip", "link", "set", "dev", eth, "master", BRIDGE],
            None,
        )?;
    }
    tap_on_bridge(steps, BRIDGE, Some(addr.mtu), opts)
}

/// [`recorded`], asked of `ip` (the host-side tool may not see this namespace's sysfs).
fn recorded_by_ip() -> Option<PodAddress> {
    PodAddress::from_alias(link(BRIDGE)["ifalias"].as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alias_round_trips_and_anything_else_is_not_ours() {
        let a = PodAddress {
            ip: Ipv4Addr::new(10, 244, 0, 7),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 244, 0, 1),
            mac: [0x0a, 0x58, 0x0a, 0xf4, 0, 7],
            mtu: 1450,
        };
        assert_eq!(
            a.to_alias(),
            "kubevirt-rs bridge binding: ip 10.244.0.7/24 gateway 10.244.0.1 mac 0a:58:0a:f4:00:07 mtu 1450"
        );
        assert_eq!(
            PodAddress::from_alias(&format!("{}\n", a.to_alias())),
            Some(a)
        );
        assert_eq!(PodAddress::from_alias("my bridge"), None);
        assert_eq!(
            PodAddress::from_alias(&a.to_alias().replace("/24", "/40")),
            None
        );
        let pod = a.pod_side_mac();
        assert_ne!(pod, a.mac);
        assert_eq!(pod[0] & 0x03, 0x02, "unicast, locally administered");
    }
}
