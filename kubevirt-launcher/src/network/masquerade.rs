//! The pod network's masquerade binding, as upstream builds it in the launcher's network
//! namespace: a bridge holding the gateway address (10.0.2.1/24), the guest's tap on it, and
//! nftables NAT: inbound connections to the pod (all ports, or the interface's `ports`) are
//! DNAT'ed to the guest's fixed address (10.0.2.2), and the guest's outbound traffic leaves
//! masqueraded as the pod's address.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use thiserror::Error;

/// A network setup step that failed.
#[derive(Debug, Error)]
pub enum NetError {
    /// A command could not be started or talked to.
    #[error("`{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output.
        message: String,
    },
}

/// How the guest is attached to the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestLink {
    /// Create a tap device of this name for the VMM's virtio-net.
    Tap(String),
    /// Attach an interface that already exists (a veth in tests, a vhost device).
    Existing(String),
}

impl GuestLink {
    fn name(&self) -> &str {
        match self {
            GuestLink::Tap(n) | GuestLink::Existing(n) => n,
        }
    }
}

/// The masquerade configuration of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    /// The pod's interface (`eth0`).
    pub pod_iface: String,
    /// The bridge to create (`k6t-eth0`).
    pub bridge: String,
    /// Gateway address on the bridge.
    pub gateway: Ipv4Addr,
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// Prefix length of the guest network.
    pub prefix_len: u8,
    /// Forwarded ports (`("tcp"|"udp", port)`); empty forwards every port.
    pub ports: Vec<(String, u16)>,
    /// Run the commands inside this named network namespace instead of the current one.
    pub netns: Option<String>,
}

impl Masquerade {
    /// Upstream's defaults for `eth0`: bridge `k6t-eth0`, gateway 10.0.2.1, guest 10.0.2.2/24.
    pub fn upstream_default(ports: Vec<(String, u16)>) -> Self {
        Self {
            pod_iface: "eth0".into(),
            bridge: "k6t-eth0".into(),
            gateway: Ipv4Addr::new(10, 0, 2, 1),
            guest_ip: Ipv4Addr::new(10, 0, 2, 2),
            prefix_len: 24,
            ports,
            netns: None,
        }
    }

    /// The nftables ruleset (a script for `nft -f -`).
    pub fn ruleset(&self) -> String {
        let guest = self.guest_ip;
        let inbound = if self.ports.is_empty() {
            format!("    counter dnat to {guest}\n")
        } else {
            self.ports
                .iter()
                .map(|(proto, port)| {
                    format!(
                        "    {} dport {port} counter dnat to {guest}\n",
                        proto.to_ascii_lowercase()
                    )
                })
                .collect()
        };
        format!(
            "table ip kubevirt_rs_nat\ndelete table ip kubevirt_rs_nat\n\
             table ip kubevirt_rs_nat {{\n\
             \x20 chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n    iifname \"{pod}\" jump inbound\n  }}\n\
             \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n    ip daddr 127.0.0.1 jump inbound\n  }}\n\
             \x20 chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    ip saddr {guest} oifname \"{pod}\" counter masquerade\n    oifname \"{bridge}\" ip saddr 127.0.0.1 counter snat to {gw}\n  }}\n\
             \x20 chain inbound {{\n{inbound}  }}\n}}\n",
            pod = self.pod_iface,
            bridge = self.bridge,
            gw = self.gateway,
        )
    }

    /// Runs one set-up command (`args[0]` is the program), in the configured namespace if any.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
        match &self.netns {
            Some(ns) => {
                let mut all = vec!["ip", "netns", "exec", ns.as_str()];
                all.extend_from_slice(args);
                command(&all, stdin).map_err(|e| match e {
                    NetError::Spawn { source, .. } => NetError::Spawn {
                        command: args.join(" "),
                        source,
                    },
                    NetError::Command { message, .. } => NetError::Command {
                        command: args.join(" "),
                        message,
                    },
                })
            }
            None => command(args, stdin),
        }
    }

    /// Build the bridge, attach the guest, enable forwarding and install the NAT rules, in the
    /// current (or the configured) network namespace.
    pub fn setup(&self, guest: &GuestLink) -> Result<(), NetError> {
        let br = self.bridge.as_str();
        let gw = format!("{}/{}", self.gateway, self.prefix_len);
        self.run(&["ip", "link", "add", br, "type", "bridge"], None)?;
        self.run(&["ip", "addr", "add", &gw, "dev", br], None)?;
        if let GuestLink::Tap(name) = guest {
            self.run(
                &[
                    "ip",
                    "tuntap",
                    "add",
                    "dev",
                    name,
                    "mode",
                    "tap",
                    "multi_queue",
                ],
                None,
            )?;
        }
        self.run(&["ip", "link", "set", guest.name(), "master", br], None)?;
        for dev in [br, guest.name()] {
            self.run(&["ip", "link", "set", dev, "up"], None)?;
        }
        self.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], None)?;
        self.run(&["nft", "-f", "-"], Some(&self.ruleset()))
    }
}

/// Runs one set-up command (`args[0]` is the program, `stdin` fed to it) in this process's
/// network namespace; its error output becomes the error.
pub(crate) fn command(args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
    let line = args.join(" ");
    let spawn = |source| NetError::Spawn {
        command: line.clone(),
        source,
    };
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Command {
            command: line.clone(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_forwards_listed_ports_or_everything() {
        let some =
            Masquerade::upstream_default(vec![("TCP".into(), 22), ("udp".into(), 53)]).ruleset();
        assert!(some.contains("tcp dport 22 counter dnat to 10.0.2.2"));
        assert!(some.contains("udp dport 53 counter dnat to 10.0.2.2"));
        assert!(some.contains("ip saddr 10.0.2.2 oifname \"eth0\" counter masquerade"));
        let all = Masquerade::upstream_default(vec![]).ruleset();
        assert!(all.contains("    counter dnat to 10.0.2.2\n"));
    }
}
