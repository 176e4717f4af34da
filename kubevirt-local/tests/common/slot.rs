//! Slots for local nodes: the node tests of every test binary run at once (`scripts/test.sh`
//! runs several binaries side by side), each node on a pod network of its own. A slot is a
//! bridge and a pod CIDR, held through an `flock` on `/tmp/kubevirt-local-test-node-<k>.lock`
//! for as long as the test holds its [`NodeSlot`]: no two nodes share a bridge, however many
//! processes run, and at most [`slots`] nodes run on the host at a time. Within one binary the
//! node tests still run one at a time (their tests may share a node name, which names the
//! node's cgroup directory).

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How many nodes may run at once: `KUBEVIRT_TEST_NODES` (default 3).
pub fn slots() -> usize {
    std::env::var("KUBEVIRT_TEST_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=50).contains(n))
        .unwrap_or(3)
}

/// One slot's pod network.
#[derive(Debug, Clone)]
pub struct Network {
    /// The bridge on the host (`kvt<k>`).
    pub bridge: String,
    /// The pod CIDR (`10.<200+k>.0.0/16`).
    pub cidr: String,
    /// Its first two octets (`10.<200+k>.`), what pod IPs start with.
    pub prefix: String,
    /// The gateway, the node's address for its pods (`10.<200+k>.0.1`).
    pub gateway: String,
}

impl Network {
    pub fn of(k: usize) -> Network {
        let prefix = format!("10.{}.", 200 + k);
        Network {
            bridge: format!("kvt{k}"),
            cidr: format!("{prefix}0.0/16"),
            gateway: format!("{prefix}0.1"),
            prefix,
        }
    }
}

thread_local! {
    /// The slot the test on this thread holds, and the node it started there.
    static CURRENT: RefCell<Option<(Network, Option<String>)>> = const { RefCell::new(None) };
    /// When the test on this thread took its slot (what the leftover checks count from).
    static TAKEN: RefCell<Option<SystemTime>> = const { RefCell::new(None) };
}

/// One node test at a time in this process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A held slot; released (and the lock file closed) when dropped.
pub struct NodeSlot {
    _lock: File,
    _one: MutexGuard<'static, ()>,
}

impl Drop for NodeSlot {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

fn try_lock(k: usize) -> Option<File> {
    let path = format!("/tmp/kubevirt-local-test-node-{k}.lock");
    let file = File::create(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: flock on a descriptor `file` owns; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(file)
}

/// Waits for a free slot and takes it for this thread's test. Every test that starts a node
/// takes one first; [`super::node::start_up_node`] puts the node on the slot's network.
pub fn node_slot() -> NodeSlot {
    assert!(current().is_none(), "this test already holds a node slot");
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let n = slots();
    loop {
        if let Some((k, lock)) = (0..n).find_map(|k| try_lock(k).map(|l| (k, l))) {
            CURRENT.with(|c| *c.borrow_mut() = Some((Network::of(k), None)));
            TAKEN.with(|t| *t.borrow_mut() = Some(SystemTime::now()));
            return NodeSlot {
                _lock: lock,
                _one: one,
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The network of the slot this thread holds.
pub fn current() -> Option<Network> {
    CURRENT.with(|c| c.borrow().as_ref().map(|(n, _)| n.clone()))
}

/// The network of the slot this thread holds; panics when it holds none.
pub fn network() -> Network {
    current().expect("a node test takes `node_slot()` before it starts a node")
}

/// Records the node started on this thread's slot (for the leftover checks).
pub fn set_node(node: &str) {
    CURRENT.with(|c| {
        if let Some((_, n)) = c.borrow_mut().as_mut() {
            *n = Some(node.to_string());
        }
    });
}

/// The node last started on this thread's slot.
pub fn node() -> Option<String> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|(_, n)| n.clone()))
}

/// When the test on this thread took its slot.
pub fn taken() -> Option<SystemTime> {
    TAKEN.with(|t| *t.borrow())
}
