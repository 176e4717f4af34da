//! What `start`, `stop` and `restart` do to a VM, as a pure function of what was read (upstream's
//! lifecycle handlers' rules): a change, or the reason for a 409.

use serde_json::{Value, json};

use crate::vm::strategy::RunStrategy;

/// What a lifecycle request looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The VM's run strategy.
    pub strategy: RunStrategy,
    /// Its instance's uid, if one exists that is not final.
    pub present: Option<String>,
    /// That instance is not being deleted.
    pub live: bool,
    /// That instance is Running.
    pub running: bool,
    /// The VM has state-change requests not carried out yet.
    pub pending: bool,
}

/// The change to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Switch the run strategy.
    SetStrategy(RunStrategy),
    /// Append these state-change requests.
    Requests(Vec<Value>),
    /// Nothing beyond the instance's grace period (a Halted VM already stopping).
    GraceOnly,
}

const NOT_RUNNING: &str = "VM is not running";
const PENDING: &str = "VM has pending state change requests";

/// `start` (with `paused`).
pub fn start(f: &Facts, paused: bool) -> Result<Change, String> {
    let live = f.present.is_some() && f.live;
    match f.strategy {
        RunStrategy::Always | RunStrategy::Once if f.running => {
            return Err("VM is already running".into());
        }
        RunStrategy::Always | RunStrategy::Once | RunStrategy::WaitAsReceiver => {
            return Err(format!(
                "{} does not support manual start requests",
                f.strategy
            ));
        }
        RunStrategy::Manual | RunStrategy::RerunOnFailure if live => {
            return Err("VM is already running".into());
        }
        _ => {}
    }
    if f.pending {
        return Err(PENDING.into());
    }
    if f.strategy == RunStrategy::Halted && !paused {
        return Ok(Change::SetStrategy(RunStrategy::Always));
    }
    let mut request = json!({"action": "Start"});
    if paused {
        request["data"] = json!({"paused": "true"});
    }
    Ok(Change::Requests(vec![request]))
}

/// `stop` (`grace`: a new grace period for the instance).
pub fn stop(f: &Facts, grace: Option<i64>) -> Result<Change, String> {
    let Some(uid) = &f.present else {
        return Err(NOT_RUNNING.into());
    };
    match f.strategy {
        // Already stopping: only a shorter grace period helps.
        RunStrategy::Halted if grace.is_some() => Ok(Change::GraceOnly),
        RunStrategy::Halted => Err(NOT_RUNNING.into()),
        RunStrategy::Manual => Ok(Change::Requests(vec![
            json!({"action": "Stop", "uid": uid}),
        ])),
        _ => Ok(Change::SetStrategy(RunStrategy::Halted)),
    }
}

/// `restart`.
pub fn restart(f: &Facts) -> Result<Change, String> {
    if f.strategy == RunStrategy::Halted {
        return Err(format!(
            "{} does not support manual restart requests",
            f.strategy
        ));
    }
    let uid = match &f.present {
        Some(uid) if f.live => uid,
        _ => return Err(NOT_RUNNING.into()),
    };
    if f.pending {
        return Err(PENDING.into());
    }
    Ok(Change::Requests(vec![
        json!({"action": "Stop", "uid": uid}),
        json!({"action": "Start"}),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(strategy: RunStrategy, vmi: Option<&str>, running: bool) -> Facts {
        Facts {
            strategy,
            present: vmi.map(String::from),
            live: vmi.is_some(),
            running,
            pending: false,
        }
    }

    #[test]
    fn start_follows_upstreams_table() {
        use RunStrategy::*;
        assert_eq!(
            start(&facts(Halted, None, false), false),
            Ok(Change::SetStrategy(Always))
        );
        assert_eq!(
            start(&facts(Halted, None, false), true),
            Ok(Change::Requests(vec![
                json!({"action": "Start", "data": {"paused": "true"}})
            ]))
        );
        assert_eq!(
            start(&facts(Always, Some("u"), true), false),
            Err("VM is already running".into())
        );
        assert_eq!(
            start(&facts(Always, None, false), false),
            Err("Always does not support manual start requests".into())
        );
        assert_eq!(
            start(&facts(Manual, Some("u"), false), false),
            Err("VM is already running".into())
        );
        assert_eq!(
            start(&facts(Manual, None, false), false),
            Ok(Change::Requests(vec![json!({"action": "Start"})]))
        );
        let mut pending = facts(RerunOnFailure, None, false);
        pending.pending = true;
        assert!(start(&pending, false).unwrap_err().contains("pending"));
    }

    #[test]
    fn stop_and_restart_follow_upstreams_table() {
        use RunStrategy::*;
        assert_eq!(
            stop(&facts(Always, None, false), None),
            Err("VM is not running".into())
        );
        assert_eq!(
            stop(&facts(Always, Some("u"), true), None),
            Ok(Change::SetStrategy(Halted))
        );
        assert_eq!(
            stop(&facts(Manual, Some("u"), true), None),
            Ok(Change::Requests(vec![
                json!({"action": "Stop", "uid": "u"})
            ]))
        );
        assert_eq!(
            stop(&facts(Halted, Some("u"), true), None),
            Err("VM is not running".into())
        );
        assert_eq!(
            stop(&facts(Halted, Some("u"), true), Some(0)),
            Ok(Change::GraceOnly)
        );
        assert_eq!(
            restart(&facts(Halted, None, false)),
            Err("Halted does not support manual restart requests".into())
        );
        assert_eq!(
            restart(&facts(Manual, None, false)),
            Err("VM is not running".into())
        );
        assert_eq!(
            restart(&facts(Always, Some("u"), true)),
            Ok(Change::Requests(vec![
                json!({"action": "Stop", "uid": "u"}),
                json!({"action": "Start"})
            ]))
        );
    }
}
