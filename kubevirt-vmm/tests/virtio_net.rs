//! Real vCPUs and a real tap: a CPL 3 polling virtio-net driver reads its MAC, sends a frame
//! and receives one, while the host end is an `AF_PACKET` socket on the tap. The tap and the
//! socket live in a network namespace the test creates and deletes, so the host's own
//! interfaces are never touched. Needs root (skipped with a message otherwise).

mod common;

use std::time::Duration;

use common::wait;
use kubevirt_vmm::testguest::netns::{PacketSocket, TestNetns};
use kubevirt_vmm::testguest::virtio_net::{self, *};
use kubevirt_vmm::virtio::net::{Net, NetConfig, Tap, VNET_HDR_LEN};
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
use vm_memory::{Bytes, GuestAddress};

const GUEST_MAC: [u8; 6] = [0x02, 0x4b, 0x56, 0x00, 0x00, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x4b, 0x56, 0x00, 0x00, 0xfe];
const TAP: &str = "kvvmm-tap0";
const HOST_PAYLOAD: &[u8] = b"kubevirt-vmm virtio-net: hello from the host";

fn read_u32(vm: &Vm, addr: u64) -> u32 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn guest_exchanges_frames_with_a_tap_in_a_private_namespace() {
    if !is_root() {
        eprintln!("skipped: creating a network namespace and a tap needs root");
        return;
    }
    let ns = TestNetns::create("kvvmm-net").expect("ip netns add");
    // No IPv6 in the namespace: the tap then carries only the test's frames.
    let _ = ns.exec(
        "sysctl",
        &[
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    );
    let tap = ns
        .run(|| Tap::open(TAP))
        .unwrap()
        .expect("tap in the test namespace");
    assert_eq!(tap.name(), TAP);
    ns.ip(&["link", "set", TAP, "up"]).unwrap();
    // Bound once the link is up (bound to a down link, the first receive fails ENETDOWN).
    let socket = ns
        .run(|| PacketSocket::bind(TAP))
        .unwrap()
        .expect("AF_PACKET socket on the tap");

    let net = Net::new(NetConfig {
        mac: GUEST_MAC,
        backend: Box::new(tap),
    });
    let counters = net.counters();
    let guest = virtio_net::virtio_net_check().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(net))
        .build()
        .unwrap();
    vm.start().unwrap();

    // Guest -> host: the broadcast frame the driver built from the MAC it read.
    let from_guest = socket
        .recv_matching(Duration::from_secs(30), |f| {
            f.len() >= 14 && f[6..12] == GUEST_MAC && f[12..14] == ETHERTYPE.to_be_bytes()
        })
        .unwrap();
    let Some(from_guest) = from_guest else {
        let state = vm.state();
        vm.stop();
        panic!("no frame from the guest on the tap (VM state {state:?})");
    };
    assert_eq!(from_guest, guest_frame(GUEST_MAC));

    // Host -> guest.
    let mut reply = GUEST_MAC.to_vec();
    reply.extend_from_slice(&HOST_MAC);
    reply.extend_from_slice(&ETHERTYPE.to_be_bytes());
    reply.extend_from_slice(HOST_PAYLOAD);
    reply.resize(60, 0);
    socket.send(&reply).unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });

    let res = |off| read_u32(&vm, RESULTS + off);
    assert_eq!(res(RES_FOUND), 1);
    assert_eq!(res(RES_STATUS), 0x0b, "FEATURES_OK accepted");
    let features: u64 = vm
        .memory()
        .read_obj(GuestAddress(RESULTS + RES_FEATURES))
        .unwrap();
    assert_eq!(
        features & ((1 << 32) | (1 << 16) | (1 << 5)),
        (1 << 32) | (1 << 16) | (1 << 5),
        "VERSION_1, STATUS and MAC offered: {features:#x}"
    );
    let mut mac = [0u8; 6];
    vm.memory()
        .read_slice(&mut mac, GuestAddress(RESULTS + RES_MAC))
        .unwrap();
    assert_eq!(mac, GUEST_MAC, "the MAC in the configuration space");
    assert_eq!(res(RES_LINK) & 0xffff, 1, "link up");
    assert_eq!(res(RES_TX_USED), 1);
    let id = u64::from(res(RES_RX_ID));
    let len = res(RES_RX_LEN) as usize;
    assert_eq!(len, VNET_HDR_LEN + reply.len());
    let mut got = vec![0u8; len];
    vm.memory()
        .read_slice(&mut got, GuestAddress(RX_BUFS + id * u64::from(RX_BUF_LEN)))
        .unwrap();
    let mut header = [0u8; VNET_HDR_LEN];
    header[10] = 1; // num_buffers
    assert_eq!(got[..VNET_HDR_LEN], header);
    assert_eq!(got[VNET_HDR_LEN..], reply[..]);
    let (rx_frames, _, tx_frames, tx_dropped) = counters.frames();
    assert!(rx_frames >= 1 && tx_frames == 1 && tx_dropped == 0);
    drop(vm);
    drop(ns);
}

#[test]
fn a_guest_without_a_nic_says_so() {
    let guest = virtio_net::virtio_net_check().unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Sink)).unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 1 });
}
