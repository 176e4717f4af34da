//! The masquerade binding's NAT in network namespaces the test creates (root): a client outside
//! the pod reaches the guest's forwarded port through the pod address, an unlisted port does not
//! reach the guest, and the guest's outbound connections leave as the pod address. The host's
//! own interfaces are never touched.

mod common;

use common::{Namespaces, in_ns, run};
use kubevirt_launcher::network::masquerade::{GuestLink, Masquerade};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn forwarded_ports_reach_the_guest_and_the_guest_leaves_as_the_pod() {
    let id = std::process::id();
    let (client, pod, guest) = (
        format!("kvm-cl{id}"),
        format!("kvm-pod{id}"),
        format!("kvm-g{id}"),
    );
    let _namespaces = Namespaces::create(&[&client, &pod, &guest]);
    run(&[
        "ip", "link", "add", "cv", "netns", &client, "type", "veth", "peer", "name", "eth0",
        "netns", &pod,
    ]);
    run(&[
        "ip", "link", "add", "gv", "netns", &guest, "type", "veth", "peer", "name", "gtap",
        "netns", &pod,
    ]);
    run(&[
        "ip",
        "-n",
        &client,
        "addr",
        "add",
        "10.99.0.1/24",
        "dev",
        "cv",
    ]);
    run(&[
        "ip",
        "-n",
        &pod,
        "addr",
        "add",
        "10.99.0.2/24",
        "dev",
        "eth0",
    ]);
    run(&[
        "ip",
        "-n",
        &guest,
        "addr",
        "add",
        "10.0.2.2/24",
        "dev",
        "gv",
    ]);
    for (ns, dev) in [(&client, "cv"), (&pod, "eth0"), (&guest, "gv")] {
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }
    let masq = Masquerade {
        netns: Some(pod.clone()),
        ..Masquerade::upstream_default(vec![("tcp".into(), 2222)])
    };
    masq.setup(&GuestLink::Existing("gtap".into()))
        .expect("masquerade setup");
    run(&[
        "ip", "-n", &guest, "route", "add", "default", "via", "10.0.2.1",
    ]);

    // The guest listens on a forwarded and an unlisted port.
    let (seen_tx, seen_rx) = mpsc::channel::<(u16, SocketAddr, String)>();
    for port in [2222u16, 2223] {
        let tx = seen_tx.clone();
        let ready = mpsc::channel::<()>();
        let ready_tx = ready.0;
        in_ns(&guest, move || {
            let l = TcpListener::bind(("0.0.0.0", port)).expect("guest listen");
            ready_tx.send(()).unwrap();
            l.set_nonblocking(false).unwrap();
            if let Ok((mut s, peer)) = l.accept() {
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                let _ = tx.send((port, peer, text));
            }
        });
        ready.1.recv().unwrap();
    }
    // The client reaches the forwarded port through the pod's address…
    in_ns(&client, || {
        let mut s =
            TcpStream::connect_timeout(&"10.99.0.2:2222".parse().unwrap(), Duration::from_secs(5))
                .expect("connect through the NAT");
        s.write_all(b"hello guest").unwrap();
    })
    .join()
    .unwrap();
    let (port, peer, text) = seen_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the guest received the connection");
    assert_eq!((port, text.as_str()), (2222, "hello guest"));
    assert_eq!(
        peer.ip().to_string(),
        "10.99.0.1",
        "inbound keeps the client's address"
    );
    // …but not a port the interface does not list.
    let refused = in_ns(&client, || {
        TcpStream::connect_timeout(&"10.99.0.2:2223".parse().unwrap(), Duration::from_secs(2))
            .is_err()
    })
    .join()
    .unwrap();
    assert!(refused, "an unlisted port is not forwarded");
    assert!(
        seen_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the guest saw nothing on 2223"
    );

    // The guest's outbound connections leave as the pod's address.
    let (ready_tx, ready_rx) = mpsc::channel();
    let outside = in_ns(&client, move || {
        let l = TcpListener::bind("10.99.0.1:3333").expect("client listen");
        ready_tx.send(()).unwrap();
        l.accept().map(|(_, peer)| peer).expect("accept")
    });
    ready_rx.recv().unwrap();
    in_ns(&guest, || {
        TcpStream::connect_timeout(&"10.99.0.1:3333".parse().unwrap(), Duration::from_secs(5))
            .expect("guest reaches outside");
    })
    .join()
    .unwrap();
    assert_eq!(
        outside.join().unwrap().ip().to_string(),
        "10.99.0.2",
        "the guest is masqueraded as the pod"
    );
}
