//! A restore's `targetReadinessPolicy` (upstream's `handleVMRestoreTargetNotReady`): what a
//! restore does while its target VM still has an instance. The target is ready once no VMI
//! exists; until then nothing is locked or written, so the user can still stop the VM.

use std::time::Duration;

use jiff::Timestamp;

/// `WaitGracePeriod`'s grace (upstream's `DefaultGracePeriod`).
pub const GRACE_PERIOD: Duration = Duration::from_secs(5 * 60);
/// The grace as Go prints a `time.Duration`, for upstream's messages.
const GRACE_TEXT: &str = "5m0s";

/// The event reason while the target is not ready.
pub const NOT_READY_EVENT: &str = "RestoreTargetNotReady";
/// The event message while the restore waits for the user.
pub const VMI_EXISTS: &str =
    "Restore target VMI still exists, please stop the restore target to proceed with restore";
/// The condition (and event) while the restore stops its target itself.
pub const STOPPING: &str = "Automatically stopping restore target for restore operation";
const WAIT_EVENTUALLY: &str = "Waiting for target VM to be powered off. Please stop the restore target to proceed with restore";
const FAIL_IMMEDIATE: &str = "Restore target VMI must be powered off before restore operation";

/// What to do about a target whose instance still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Wait for the user to stop it; the conditions say this.
    Wait(String),
    /// Stop it (as `virtctl stop` does) and look again.
    Stop,
    /// Fail the restore with this message.
    Fail(String),
}

/// The decision for `policy` (default `WaitGracePeriod`) on a restore created at `created`.
/// An unknown policy is refused by validation; here it fails the restore, naming it.
pub fn decide(policy: Option<&str>, created: Option<Timestamp>, now: Timestamp) -> NotReady {
    match policy.unwrap_or("WaitGracePeriod") {
        "WaitEventually" => NotReady::Wait(WAIT_EVENTUALLY.into()),
        "StopTarget" => NotReady::Stop,
        "FailImmediate" => NotReady::Fail(FAIL_IMMEDIATE.into()),
        "WaitGracePeriod" => {
            let waited = created.map_or(Duration::ZERO, |c| {
                now.duration_since(c).try_into().unwrap_or(Duration::ZERO)
            });
            if waited > GRACE_PERIOD {
                NotReady::Fail(format!(
                    "Restore target failed to be ready within {GRACE_TEXT}. Please power off the target VM before attempting restore"
                ))
            } else {
                NotReady::Wait(format!(
                    "{WAIT_EVENTUALLY}, or the operation will fail after {GRACE_TEXT}"
                ))
            }
        }
        other => NotReady::Fail(format!("unknown targetReadinessPolicy: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn the_default_waits_five_minutes_then_fails() {
        let NotReady::Wait(m) = decide(None, Some(at(0)), at(299)) else {
            panic!("waits within the grace period");
        };
        assert!(m.ends_with("or the operation will fail after 5m0s"), "{m}");
        let NotReady::Fail(m) = decide(Some("WaitGracePeriod"), Some(at(0)), at(301)) else {
            panic!("fails after it");
        };
        assert!(
            m.starts_with("Restore target failed to be ready within 5m0s"),
            "{m}"
        );
    }

    #[test]
    fn each_policy_decides_as_upstream() {
        assert_eq!(decide(Some("StopTarget"), None, at(0)), NotReady::Stop);
        assert_eq!(
            decide(Some("FailImmediate"), None, at(0)),
            NotReady::Fail(FAIL_IMMEDIATE.into())
        );
        assert_eq!(
            decide(Some("WaitEventually"), Some(at(0)), at(100_000)),
            NotReady::Wait(WAIT_EVENTUALLY.into())
        );
        assert!(
            matches!(decide(Some("Sometimes"), None, at(0)), NotReady::Fail(m) if m.contains("Sometimes"))
        );
    }
}
