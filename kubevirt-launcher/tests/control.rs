//! The control socket over a real running guest: status, pause (the guest stops counting),
//! unpause (it counts again), reset (a fresh VM counts from zero), stop, and the phases
//! upstream reports; shutdown presses the power
//! button, and a guest that ignores it is stopped after the grace period.

use kubevirt_launcher::control::{ControlServer, Shutdowns, Target};
use kubevirt_launcher::run::machine::{Machine, MachineSpec};
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

/// The counter guest as a launcher machine (started), with its control socket.
fn serve(dir: &std::path::Path) -> (Arc<Machine>, ControlServer) {
    let guest = programs::counter().expect("counter guest");
    let machine = Machine::start(MachineSpec {
        config: guest.vm_config(1, ConsoleConfig::Sink),
        console: None,
        disks: Vec::new(),
        rng: false,
        net: None,
    })
    .expect("machine");
    let server = ControlServer::start(
        &dir.join("control.sock"),
        Target {
            machine: machine.clone(),
            shutdowns: Shutdowns::new(machine.clone()),
            grace: Duration::from_secs(30),
            info: json!({"vcpus": 1}),
        },
    )
    .expect("control socket");
    (machine, server)
}

fn count(vm: &Vm) -> u64 {
    vm.memory().read_obj(GuestAddress(COUNTER_ADDR)).unwrap()
}

#[test]
fn status_pause_unpause_stop_on_a_running_guest() {
    let dir = std::env::temp_dir().join(format!("kv-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (machine, server) = serve(&dir);
    let vm = machine.vm();
    let mut conn = UnixStream::connect(server.socket()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    while count(&vm) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        ask(&mut conn, &mut reader, json!({"op": "status"}))["phase"],
        "Running"
    );
    assert_eq!(
        ask(&mut conn, &mut reader, json!({"op": "pause"}))["ok"],
        true
    );
    let status = ask(&mut conn, &mut reader, json!({"op": "status"}));
    assert_eq!(
        (status["phase"].as_str(), status["paused"].as_bool()),
        (Some("Running"), Some(true))
    );
    let frozen = count(&vm);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(count(&vm), frozen, "a paused guest makes no progress");
    assert_eq!(
        ask(&mut conn, &mut reader, json!({"op": "unpause"}))["ok"],
        true
    );
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
    let status = ask(&mut conn, &mut reader, json!({"op": "status"}));
    assert_eq!(
        (status["phase"].as_str(), status["restarts"].as_u64()),
        (Some("Running"), Some(1))
    );
    let bad = ask(&mut conn, &mut reader, json!({"op": "reboot-please"}));
    assert!(bad["error"].as_str().unwrap().contains("unknown op"));
    assert_eq!(
        ask(&mut conn, &mut reader, json!({"op": "stop"}))["ok"],
        true
    );
    assert_eq!(
        ask(&mut conn, &mut reader, json!({"op": "status"}))["phase"],
        "Succeeded"
    );
}

/// The counter guest takes no notice of the power button: after the grace period the launcher
/// stops it; a second request changes nothing.
#[test]
fn shutdown_stops_a_guest_that_ignores_the_button_after_the_grace_period() {
    let dir = std::env::temp_dir().join(format!("kv-control-grace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
    let answer = ask(
        &mut conn,
        &mut reader,
        json!({"op": "shutdown", "gracePeriodSeconds": 1}),
    );
    assert_eq!(answer["gracePeriodSeconds"], 1, "{answer}");
    let again = ask(&mut conn, &mut reader, json!({"op": "shutdown"}));
    assert_eq!(again["already"], true, "{again}");
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
