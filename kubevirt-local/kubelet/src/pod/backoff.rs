//! Restart and image-pull back-off as upstream's kubelet does it: 10 s, doubling to 5 min, reset
//! once a container has run for 10 minutes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The first delay.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long starts over at [`INITIAL`].
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Back-off per key (e.g. a container name).
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, (Duration, Instant)>,
}

impl Backoff {
    /// Whether `key` is still waiting at `now`.
    pub fn waiting(&self, key: &str, now: Instant) -> bool {
        self.entries
            .get(key)
            .is_some_and(|(delay, since)| now < *since + *delay)
    }

    /// Records a failure at `now`: the next try waits `INITIAL`, then twice as long each time.
    pub fn fail(&mut self, key: &str, now: Instant) {
        let delay = match self.entries.get(key) {
            Some((d, since)) if now.duration_since(*since) < *d + RESET_AFTER => (*d * 2).min(MAX),
            _ => INITIAL,
        };
        self.entries.insert(key.to_string(), (delay, now));
    }

    /// Forgets `key` (it succeeded, or ran long enough).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert!(!b.waiting("c", t0));
        b.fail("c", t0);
        assert!(b.waiting("c", t0 + Duration::from_secs(9)));
        assert!(!b.waiting("c", t0 + Duration::from_secs(10)));
        let t1 = t0 + Duration::from_secs(10);
        b.fail("c", t1);
        assert!(b.waiting("c", t1 + Duration::from_secs(19)));
        let mut t = t1;
        for _ in 0..10 {
            t += Duration::from_secs(1);
            b.fail("c", t);
        }
        assert!(b.waiting("c", t + MAX - Duration::from_secs(1)));
        assert!(!b.waiting("c", t + MAX));
        let late = t + MAX + RESET_AFTER + Duration::from_secs(1);
        b.fail("c", late);
        assert!(!b.waiting("c", late + INITIAL));
        b.reset("c");
        assert!(!b.waiting("c", late));
    }
}
