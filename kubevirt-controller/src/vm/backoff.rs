//! Start-failure backoff: an instance that ends without ever running is a failed start, and the
//! next one waits longer each time (upstream: 10 s growing with the square of the count, at most
//! 300 s, plus jitter).

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::core::v1::VirtualMachineStartFailure;

/// Shortest wait after a failed start, in seconds.
pub const MIN_DELAY_SECONDS: i64 = 10;
/// Longest wait, in seconds.
pub const MAX_DELAY_SECONDS: i64 = 300;

/// The wait after the `count`-th consecutive failed start; `jitter` in [0, 1) adds up to half
/// again (capped at [`MAX_DELAY_SECONDS`]), so VMs that failed together do not retry together.
pub fn delay(count: i32, jitter: f64) -> SignedDuration {
    let count = i64::from(count.max(1));
    let base = (MIN_DELAY_SECONDS * count.saturating_mul(count))
        .clamp(MIN_DELAY_SECONDS, MAX_DELAY_SECONDS);
    let extra = (base as f64 / 2.0 * jitter.clamp(0.0, 0.999)) as i64;
    SignedDuration::from_secs((base + extra).min(MAX_DELAY_SECONDS))
}

/// Records the failed start of instance `uid` (once per instance).
pub fn record(
    previous: Option<&VirtualMachineStartFailure>,
    uid: &str,
    now: Timestamp,
    jitter: f64,
) -> VirtualMachineStartFailure {
    if let Some(p) = previous.filter(|p| p.last_failed_vmiuid.as_deref() == Some(uid)) {
        return p.clone();
    }
    let count = previous
        .and_then(|p| p.consecutive_fail_count)
        .unwrap_or(0)
        .saturating_add(1);
    VirtualMachineStartFailure {
        consecutive_fail_count: Some(count),
        last_failed_vmiuid: Some(uid.to_string()),
        retry_after_timestamp: Some(Time(
            now.saturating_add(delay(count, jitter)).unwrap_or(now),
        )),
    }
}

/// When a new start may happen, if the backoff still holds it back at `now`.
pub fn holds_until(
    failure: Option<&VirtualMachineStartFailure>,
    now: Timestamp,
) -> Option<Timestamp> {
    let at = failure?.retry_after_timestamp.as_ref()?.0;
    (at > now).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_with_the_square_and_is_capped() {
        let secs = |c, j| delay(c, j).as_secs();
        assert_eq!(secs(1, 0.0), 10);
        assert_eq!(secs(2, 0.0), 40);
        assert_eq!(secs(3, 0.0), 90);
        assert_eq!(secs(6, 0.0), 300);
        assert_eq!(secs(1000, 0.9), 300);
        assert_eq!(secs(2, 0.5), 50);
    }

    #[test]
    fn a_failure_counts_once_per_instance_and_holds_until_its_time() {
        let now: Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let first = record(None, "a", now, 0.0);
        assert_eq!(first.consecutive_fail_count, Some(1));
        assert_eq!(record(Some(&first), "a", now, 0.0), first);
        let second = record(Some(&first), "b", now, 0.0);
        assert_eq!(second.consecutive_fail_count, Some(2));
        let until = holds_until(Some(&second), now).unwrap();
        assert_eq!(until.duration_since(now).as_secs(), 40);
        assert_eq!(holds_until(Some(&second), until), None);
        assert_eq!(holds_until(None, now), None);
    }
}
