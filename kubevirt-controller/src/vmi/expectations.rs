//! The pods the VMI controller created that its pod cache has not shown yet, as upstream's
//! `ControllerExpectations`: the controller decides from a cache of the launcher pods (one watch,
//! no LIST per sync), and a cache lags its own writes. A VMI whose created pod the cache does not
//! show yet is not synced from the cache: it would see no pod and create a second one.
//!
//! An expectation ends when the cache shows the pod, or after [`EXPECTATION_TTL`] (a pod deleted
//! before the watch delivered it, or a relist that never showed it: upstream gives up after five
//! minutes; a VMI that waits that long for a pod it already has is worse than a retry that finds
//! it on the server).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a created pod is waited for in the cache before the VMI is synced without it.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Created pods not yet seen, by the uid of the VMI that owns them.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, (String, Instant)>>,
}

impl Expectations {
    /// The VMI `vmi` created the pod whose uid is `pod`.
    pub fn created(&self, vmi: &str, pod: &str) {
        self.lock()
            .insert(vmi.to_string(), (pod.to_string(), Instant::now()));
    }

    /// Whether the VMI `vmi` may be synced from the cache, given whether the cache shows the pod
    /// of `uid` (`cached`). A pod seen, or waited for longer than [`EXPECTATION_TTL`], ends
    /// the expectation; expectations of other VMIs older than that are dropped too (their VMI
    /// may be gone).
    pub fn satisfied(&self, vmi: &str, cached: impl Fn(&str) -> bool) -> bool {
        self.satisfied_at(vmi, cached, Instant::now())
    }

    fn satisfied_at(&self, vmi: &str, cached: impl Fn(&str) -> bool, now: Instant) -> bool {
        let mut pending = self.lock();
        pending.retain(|_, (_, since)| now.duration_since(*since) < EXPECTATION_TTL);
        let Some((pod, _)) = pending.get(vmi) else {
            return true;
        };
        if cached(pod) {
            pending.remove(vmi);
            return true;
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vmi_without_a_created_pod_is_synced() {
        let e = Expectations::default();
        assert!(e.satisfied("vmi-a", |_| false));
    }

    #[test]
    fn a_created_pod_holds_its_vmi_until_the_cache_shows_it() {
        let e = Expectations::default();
        e.created("vmi-a", "pod-1");
        assert!(!e.satisfied("vmi-a", |_| false), "not in the cache yet");
        assert!(!e.satisfied("vmi-a", |p| p == "pod-other"), "another pod");
        assert!(e.satisfied("vmi-b", |_| false), "other VMIs are not held");
        assert!(e.satisfied("vmi-a", |p| p == "pod-1"), "seen");
        assert!(e.satisfied("vmi-a", |_| false), "seen once is enough");
    }

    #[test]
    fn an_expectation_ends_after_its_ttl() {
        let e = Expectations::default();
        e.created("vmi-a", "pod-1");
        let later = Instant::now() + EXPECTATION_TTL + Duration::from_millis(1);
        assert!(e.satisfied_at("vmi-a", |_| false, later));
        assert!(e.lock().is_empty());
    }

    #[test]
    fn a_new_pod_replaces_the_expectation_of_the_same_vmi() {
        let e = Expectations::default();
        e.created("vmi-a", "pod-1");
        e.created("vmi-a", "pod-2");
        assert!(!e.satisfied("vmi-a", |p| p == "pod-1"));
        assert!(e.satisfied("vmi-a", |p| p == "pod-2"));
    }
}
