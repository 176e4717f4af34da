//! A real guest's serial console through the console hub: the VMM writes the console into a pipe,
//! the hub serves it on a unix socket, and a client sees what the guest printed.

use kubevirt_launcher::console::ConsoleHub;
use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn a_guest_console_reaches_a_socket_client() {
    let dir = kubevirt_testsupport::tempdir("console-vm");
    let (read_end, write_end) = std::io::pipe().expect("pipe");
    let guest = programs::hello().expect("assemble the hello guest");
    let vm = Arc::new(
        Vm::new(guest.vm_config(1, ConsoleConfig::Fd(OwnedFd::from(write_end)))).expect("vm"),
    );
    let input_vm = vm.clone();
    let hub = ConsoleHub::start(
        read_end,
        &dir.join("console.sock"),
        Arc::new(move |b: &[u8]| {
            input_vm.serial_input(b);
        }),
        None,
    )
    .expect("console hub");
    vm.start().expect("start");
    assert_eq!(
        vm.wait_timeout(Duration::from_secs(30)),
        Some(ExitReason::DebugExit { code: 0 })
    );
    // Connecting after the guest finished still shows what it printed (scroll-back).
    let mut client = UnixStream::connect(hub.socket()).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("Hello from the guest") {
        let n = client.read(&mut buf).expect("console output");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}
