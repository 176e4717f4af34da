//! The control socket over a real running guest: status, pause (the guest stops counting),
//! unpause (it counts again), stop, and the phases upstream reports.

use kubevirt_launcher::control::ControlServer;
use kubevirt_vmm::testguest::programs::{self, COUNTER_ADDR};
use kubevirt_vmm::{ConsoleConfig, Vm};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};

fn ask(conn: &mut UnixStream, reader: &mut BufReader<UnixStream>, req: Value) -> Value {
    writeln!(conn, "{req}").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn count(vm: &Vm) -> u64 {
    vm.memory().read_obj(GuestAddress(COUNTER_ADDR)).unwrap()
}

#[test]
fn status_pause_unpause_stop_on_a_running_guest() {
    let dir = std::env::temp_dir().join(format!("kv-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let guest = programs::counter().expect("counter guest");
    let vm = Arc::new(Vm::new(guest.vm_config(1, ConsoleConfig::Sink)).expect("vm"));
    let server =
        ControlServer::start(&dir.join("control.sock"), vm.clone()).expect("control socket");
    let mut conn = UnixStream::connect(server.socket()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    assert_eq!(
        ask(&mut conn, &mut reader, json!({"op": "status"}))["phase"],
        "Scheduled"
    );
    vm.start().unwrap();
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
