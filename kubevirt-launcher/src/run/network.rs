//! The pod network's masquerade binding, attached: a tap for the VMM's virtio-net, the bridge and
//! NAT built around it ([`crate::network::masquerade`]) and the DHCP server that hands the guest
//! its fixed address. Everything lives in the launcher's network namespace (the pod's), so it
//! goes away with the pod.

use crate::network::bridge;
use crate::network::dhcp::{DhcpConfig, DhcpServer, bind_to_device, serve};
use crate::network::masquerade::{GuestLink, Masquerade};
use crate::network::prepare::{self, PrepareOptions};
use crate::plan::{Binding, NetworkPlan};
use kubevirt_vmm::virtio::net::Tap;
use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use thiserror::Error;

/// The guest's tap, as upstream names it in the pod.
pub const TAP_NAME: &str = "tap0";
/// DHCP's "infinite" lease, as upstream hands out.
const INFINITE_LEASE: Duration = Duration::from_secs(u32::MAX as u64);

/// Why the pod network could not be attached.
#[derive(Debug, Error)]
pub enum PodNetworkError {
    /// The launcher was not told it may rebuild its network namespace.
    #[error(
        "spec.domain.devices.interfaces[0]: the masquerade binding rebuilds the launcher's network namespace (bridge {bridge}, nftables NAT, ip_forward); run the launcher in the pod's (or a scratch) network namespace with --pod-network, or set spec.domain.devices.autoattachPodInterface: false"
    )]
    NotAllowed {
        /// The bridge it would create.
        bridge: String,
    },
    /// The node agent said it prepared the network, but the bridge is not there.
    #[error(
        "the node agent reported the pod network prepared, but bridge {0} does not exist (or does not record the pod's address) in this network namespace (run `kubevirt-launcher pod-network` for this pod first)"
    )]
    NotPrepared(String),
    /// The pod interface is missing.
    #[error(
        "spec.domain.devices.interfaces[0]: the pod interface {0} does not exist in this network namespace"
    )]
    NoPodInterface(String),
    /// The bridge binding could not be built.
    #[error("bridge binding set-up: {0}")]
    Bridge(String),
    /// The tap could not be created.
    #[error("creating tap {TAP_NAME}: {0}")]
    Tap(#[from] kubevirt_vmm::virtio::net::TapError),
    /// Bridge or NAT set-up failed.
    #[error("masquerade set-up: {0}")]
    Masquerade(#[from] crate::network::masquerade::NetError),
    /// The DHCP server could not start.
    #[error("DHCP server on {bridge}: {source}")]
    Dhcp {
        /// The bridge.
        bridge: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The attached pod network: stops the DHCP server when dropped.
#[derive(Debug)]
pub struct PodNetwork {
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// How the guest is bound.
    pub binding: Binding,
    stop: Arc<AtomicBool>,
    dhcp: Option<JoinHandle<()>>,
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.dhcp.take() {
            let _ = t.join();
        }
    }
}

/// A stable, locally administered MAC for a VMI that names none.
pub fn generated_mac(namespace: &str, name: &str) -> [u8; 6] {
    let h = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    [0x02, 0x6b, 0x76, h[0], h[1], h[2]]
}

/// Name servers and search domains from `resolv.conf` text (the pod's DNS, passed on).
fn resolv_conf(text: &str) -> (Vec<Ipv4Addr>, Vec<String>) {
    let (mut dns, mut search) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.extend(words.next().and_then(|w| w.parse::<Ipv4Addr>().ok())),
            Some("search") => search.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    (dns, search)
}

/// What [`attach`] needs besides the plan.
#[derive(Debug, Clone)]
pub struct PodNetworkOptions {
    /// The pod's interface (`eth0`).
    pub pod_iface: String,
    /// The guest's host name (handed out by DHCP).
    pub hostname: String,
    /// VMI namespace and name, for a generated MAC.
    pub vmi: (String, String),
    /// The bridge, tap and NAT exist (built by `kubevirt-launcher pod-network` for the node
    /// agent): only open the tap and serve DHCP.
    pub prepared: bool,
}

/// The guest's side of the binding: its address on the wire, the DHCP server's, the router.
struct Lease {
    server_ip: Ipv4Addr,
    client_ip: Ipv4Addr,
    prefix_len: u8,
    router: Ipv4Addr,
    mtu: Option<u16>,
    bridge: String,
}

/// Attaches the guest to the pod network as `plan` binds it (building the binding unless the
/// node agent prepared it); returns the guest's MAC and the tap's descriptor for virtio-net
/// (the tap lives while a descriptor of it is open).
pub fn attach(
    plan: &NetworkPlan,
    opts: &PodNetworkOptions,
) -> Result<([u8; 6], OwnedFd, PodNetwork), PodNetworkError> {
    let (mut mac, tap, lease) = match plan.binding {
        Binding::Masquerade => masquerade(plan, opts)?,
        Binding::Bridge => bridge(opts)?,
    };
    if let Some(m) = plan.mac {
        mac = m;
    }
    let (dns, search) =
        resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let config = DhcpConfig {
        server_ip: lease.server_ip,
        client_ip: lease.client_ip,
        prefix_len: lease.prefix_len,
        client_mac: mac,
        router: lease.router,
        dns,
        search,
        hostname: Some(opts.hostname.clone()),
        mtu: lease.mtu,
        lease: INFINITE_LEASE,
    };
    let dhcp_err = |source| PodNetworkError::Dhcp {
        bridge: lease.bridge.clone(),
        source,
    };
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 67)).map_err(dhcp_err)?;
    bind_to_device(&socket, &lease.bridge).map_err(dhcp_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let dhcp = {
        let stop = stop.clone();
        let server = DhcpServer::new(config);
        std::thread::Builder::new()
            .name("dhcp".into())
            .spawn(move || {
                crate::confine::enter(crate::confine::ThreadKind::Dhcp);
                if let Err(e) = serve(&socket, &server, &stop) {
                    tracing::error!(error = %e, "the DHCP server stopped");
                }
            })
            .map_err(dhcp_err)?
    };
    Ok((
        mac,
        OwnedFd::from(tap),
        PodNetwork {
            mac,
            guest_ip: lease.client_ip,
            binding: plan.binding,
            stop,
            dhcp: Some(dhcp),
        },
    ))
}

/// The masquerade binding: the guest at 10.0.2.2 behind NAT; its MAC generated from the VMI.
fn masquerade(
    plan: &NetworkPlan,
    opts: &PodNetworkOptions,
) -> Result<([u8; 6], Tap, Lease), PodNetworkError> {
    let mut masq = Masquerade::upstream_default(plan.ports.clone());
    masq.pod_iface = opts.pod_iface.clone();
    let sys = std::path::Path::new("/sys/class/net").join(&opts.pod_iface);
    if !interface_exists(&opts.pod_iface) {
        return Err(PodNetworkError::NoPodInterface(opts.pod_iface.clone()));
    }
    let mtu = std::fs::read_to_string(sys.join("mtu"))
        .ok()
        .and_then(|m| m.trim().parse().ok());
    let tap = if opts.prepared {
        // The persistent tap the node agent made, owned by this uid: attaching to it needs
        // no CAP_NET_ADMIN (the kernel's tun_not_capable checks the owner first).
        if !interface_exists(&masq.bridge) {
            return Err(PodNetworkError::NotPrepared(masq.bridge.clone()));
        }
        Tap::open(TAP_NAME)?
    } else {
        // The tap lives as long as the VMM holds it: created here, gone when the launcher
        // exits.
        let tap = Tap::open(TAP_NAME)?;
        masq.setup(&GuestLink::Existing(TAP_NAME.into()))?;
        tap
    };
    let lease = Lease {
        server_ip: masq.gateway,
        client_ip: masq.guest_ip,
        prefix_len: masq.prefix_len,
        router: masq.gateway,
        mtu,
        bridge: masq.bridge,
    };
    Ok((generated_mac(&opts.vmi.0, &opts.vmi.1), tap, lease))
}

/// The bridge binding: the guest takes the pod's address, gateway and MAC, recorded on the
/// bridge by `kubevirt-launcher pod-network` (or built here, standalone with --pod-network).
fn bridge(opts: &PodNetworkOptions) -> Result<([u8; 6], Tap, Lease), PodNetworkError> {
    if !opts.prepared {
        let build = PrepareOptions {
            netns: "/proc/self/ns/net".into(),
            // SAFETY: geteuid has no preconditions.
            tap_owner: unsafe { libc::geteuid() },
            pod_iface: opts.pod_iface.clone(),
        };
        let network = NetworkPlan {
            name: "default".into(),
            binding: Binding::Bridge,
            mac: None,
            ports: vec![],
        };
        prepare::build(&network, &build).map_err(|e| PodNetworkError::Bridge(e.to_string()))?;
    }
    let Some(addr) = bridge::recorded() else {
        return Err(PodNetworkError::NotPrepared(bridge::BRIDGE.into()));
    };
    let tap = Tap::open(TAP_NAME)?;
    let lease = Lease {
        server_ip: bridge::DHCP_SERVER_IP,
        client_ip: addr.ip,
        prefix_len: addr.prefix_len,
        router: addr.gateway,
        mtu: u16::try_from(addr.mtu).ok(),
        bridge: bridge::BRIDGE.into(),
    };
    Ok((addr.mac, tap, lease))
}

/// Whether this process's network namespace has an interface `name` (asked of the kernel,
/// not of /sys, which may be another namespace's mount).
fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a NUL-terminated string that outlives the call; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_name_servers_and_search_domains() {
        let (dns, search) = resolv_conf(
            "# pod DNS\nnameserver 10.96.0.10\nnameserver fd00::a\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
        );
        assert_eq!(dns, [Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(search, ["default.svc.cluster.local", "svc.cluster.local"]);
    }

    #[test]
    fn generated_macs_are_stable_unicast_and_local() {
        let a = generated_mac("default", "demo");
        assert_eq!(a, generated_mac("default", "demo"));
        assert_ne!(a, generated_mac("default", "other"));
        assert_eq!(a[0] & 1, 0, "unicast");
        assert_eq!(a[0] & 2, 2, "locally administered");
    }
}
