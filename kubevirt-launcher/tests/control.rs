//! The control socket over a real running guest: status, pause (the guest stops counting),
//! unpause (it counts again), reset (a fresh VM counts from zero), stop, and the phases
//! upstream reports; shutdown presses the power
//! button, and a guest that ignores it is stopped after the grace period.

use kubevirt_launcher::control::{ControlServer, Identity, ServeEvent, Shutdowns, Target};
use kubevirt_launcher::run::machine::{Machine, MachineSpec};
use kubevirt_launcher_protocol::{
    Client, ClientError, GuestInfo, Phase, Request, ShutdownReply, StartRequest,
};
use kubevirt_vmm::testguest::programs::{self, COUNTER_ADDR};
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};

fn ask(conn: &mut UnixStream, reader: &mut BufReader<UnixStream>, req: Value) -> Value {
    writeln!(conn, "{req}").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// The counter guest as a launcher machine (started) and what the control socket acts on.
fn counter_target() -> (Arc<Machine>, Target) {
    let guest = programs::counter().expect("counter guest");
    let machine = Machine::start(MachineSpec {
        config: guest.vm_config(1, ConsoleConfig::Sink),
        console: None,
        disks: Vec::new(),
        rng: false,
        net: None,
        stats: Default::default(),
    })
    .expect("machine");
    let target = Target {
        machine: machine.clone(),
        shutdowns: Shutdowns::new(machine.clone()),
        grace: Duration::from_secs(30),
        info: GuestInfo {
            vcpus: 1,
            ..GuestInfo::default()
        },
        vmi: ("default".into(), "control".into(), "uid-1".into()),
        snapshots: None,
        migrations: None,
    };
    (machine, target)
}

/// The counter guest with its control socket.
fn serve(dir: &std::path::Path) -> (Arc<Machine>, ControlServer) {
    let (machine, target) = counter_target();
    let server = ControlServer::start(&dir.join("control.sock"), target).expect("control socket");
    (machine, server)
}

fn count(vm: &Vm) -> u64 {
    vm.memory().read_obj(GuestAddress(COUNTER_ADDR)).unwrap()
}

#[test]
fn status_pause_unpause_stop_on_a_running_guest() {
    let dir = kubevirt_testsupport::tempdir("control");
    let (machine, server) = serve(&dir);
    let vm = machine.vm();
    let mut conn = UnixStream::connect(server.socket()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    while count(&vm) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A hand-typed request (no version) gets a reply of this protocol's version.
    let raw = ask(&mut conn, &mut reader, json!({"op": "status"}));
    assert_eq!(
        (&raw["phase"], &raw["version"]),
        (
            &json!("Running"),
            &json!(kubevirt_launcher_protocol::VERSION)
        )
    );
    let client = Client::new(server.socket());
    client.act(&Request::Pause).unwrap();
    let status = client.status().unwrap();
    assert_eq!((status.phase, status.paused), (Phase::Running, true));
    let me = status.launcher.expect("the launcher names its VMI");
    assert_eq!(
        (
            me.namespace.as_str(),
            me.name.as_str(),
            me.uid.as_str(),
            me.pid
        ),
        ("default", "control", "uid-1", std::process::id())
    );
    let frozen = count(&vm);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(count(&vm), frozen, "a paused guest makes no progress");
    client.act(&Request::Unpause).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&vm) == frozen {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest did not continue"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A hard reset: the supervisor (the launcher's main loop) builds a fresh VM.
    let old = Arc::downgrade(&vm);
    drop(vm);
    assert_eq!(
        ask(&mut conn, &mut reader, json!({"op": "reset"}))["ok"],
        true
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while machine.restarts() == 0 {
        assert_eq!(machine.supervise(Duration::from_millis(50)).unwrap(), None);
        assert!(Instant::now() < deadline, "no restart");
    }
    assert!(old.upgrade().is_none(), "the old VM is gone");
    let fresh = machine.vm();
    while count(&fresh) == 0 {
        assert!(Instant::now() < deadline, "the fresh guest did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = client.status().unwrap();
    assert_eq!((status.phase, status.restarts), (Phase::Running, 1));
    let bad = ask(&mut conn, &mut reader, json!({"op": "reboot-please"}));
    assert!(bad["error"].as_str().unwrap().contains("unknown op"));
    assert_eq!(bad["ok"], false);
    // A peer of another protocol version is told so, and nothing happens.
    let other = ask(&mut conn, &mut reader, json!({"op": "stop", "version": 99}));
    assert!(
        other["error"].as_str().unwrap().contains("version 99"),
        "{other}"
    );
    assert_eq!(client.status().unwrap().phase, Phase::Running);
    client.stop().unwrap();
    assert_eq!(client.status().unwrap().phase, Phase::Succeeded);
}

/// The counter guest takes no notice of the power button: after the grace period the launcher
/// stops it; a second request changes nothing.
#[test]
fn shutdown_stops_a_guest_that_ignores_the_button_after_the_grace_period() {
    let dir = kubevirt_testsupport::tempdir("control-grace");
    let (machine, server) = serve(&dir);
    let vm = machine.vm();
    let mut conn = UnixStream::connect(server.socket()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let bad = ask(
        &mut conn,
        &mut reader,
        json!({"op": "shutdown", "gracePeriodSeconds": -1}),
    );
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("gracePeriodSeconds")
    );
    let t = Instant::now();
    let client = Client::new(server.socket());
    assert_eq!(
        client.shutdown(Some(Duration::from_secs(1))).unwrap(),
        ShutdownReply::Requested {
            grace_period_seconds: 1
        }
    );
    let again = ask(&mut conn, &mut reader, json!({"op": "shutdown"}));
    assert_eq!(again["shutdown"], "alreadyRequested", "{again}");
    assert_eq!(
        client.shutdown(None).unwrap(),
        ShutdownReply::AlreadyRequested
    );
    // Refusals come back typed.
    assert!(matches!(
        Client::new(dir.join("nothing-here.sock")).status(),
        Err(ClientError::Connect { .. })
    ));
    assert_eq!(
        vm.wait_timeout(Duration::from_secs(30)),
        Some(ExitReason::Stopped)
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "stopped only after the grace period ({:?})",
        t.elapsed()
    );
}

/// A `stop` that reaches a `serve` launcher while its VM is being set up (after `start`) is
/// taken, and the VM is stopped the moment the socket switches to it.
#[test]
fn a_stop_during_set_up_stops_the_vm_once_it_is_built() {
    let dir = kubevirt_testsupport::tempdir("control-pending");
    let identity = Identity {
        namespace: "default".into(),
        name: "control".into(),
        uid: "uid-1".into(),
    };
    let (server, events) =
        ControlServer::waiting(&dir.join("control.sock"), identity).expect("control socket");
    let client = Client::new(server.socket());
    assert_eq!(client.status().unwrap().phase, Phase::Waiting);
    client
        .act(&Request::Start(Box::new(StartRequest {
            vmi: json!({"metadata": {"uid": "uid-1"}}),
            network_prepared: false,
            restore_from: None,
        })))
        .expect("start");
    assert!(matches!(
        events.recv_timeout(Duration::from_secs(5)),
        Ok(ServeEvent::Start { .. })
    ));
    assert_eq!(client.status().unwrap().phase, Phase::Scheduled);
    client.stop().expect("stop while setting up");
    let (machine, target) = counter_target();
    let vm = machine.vm();
    server.serve_target(target);
    assert_eq!(
        vm.wait_timeout(Duration::from_secs(10)),
        Some(ExitReason::Stopped)
    );
    assert_eq!(client.status().unwrap().phase, Phase::Succeeded);
}

#[test]
fn stats_report_the_vcpus_cpu_time_growing_and_the_resident_set() {
    let dir = kubevirt_testsupport::tempdir("control-stats");
    let (machine, server) = serve(&dir);
    let client = Client::new(server.socket());
    let first = client.stats().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let second = client.stats().unwrap();
    // The counter guest spins: its vCPU is on a host CPU all the time.
    let seconds = |s: &kubevirt_launcher_protocol::Stats| {
        s.vcpus.iter().find(|v| v.id == 0).map(|v| v.cpu_seconds)
    };
    let (a, b) = (seconds(&first).unwrap(), seconds(&second).unwrap());
    assert!(b - a >= 0.2, "vcpu0 ran {a} s, then {b} s");
    assert!(second.resident_bytes > 1 << 20, "{second:?}");
    assert_eq!(
        second.domain_memory_bytes, 0,
        "this target gives no memory size"
    );
    assert!(second.interfaces.is_empty() && second.disks.is_empty());
    machine.vm().stop();
}
