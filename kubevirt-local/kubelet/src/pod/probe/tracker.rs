//! One probe's bookkeeping: when it is due, its consecutive results against its thresholds, and
//! what they mean for the container (started, ready or not, to be killed).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Probe;

use super::check::Outcome;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `startupProbe`.
    Startup,
    /// `livenessProbe`.
    Liveness,
    /// `readinessProbe`.
    Readiness,
}

impl Kind {
    /// As an event message starts (`Liveness probe failed: ...`).
    pub fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    /// As the `Killing` event names it (`failed liveness probe`).
    pub fn word(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }
}

/// What one attempt changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing the container shows.
    Same,
    /// The startup probe passed.
    Started,
    /// Readiness is now this.
    Ready(bool),
    /// A startup or liveness probe reached its failure threshold.
    Kill,
}

/// A probe's state.
#[derive(Debug)]
pub struct Tracker {
    /// Which probe.
    pub kind: Kind,
    /// Its spec.
    pub probe: Probe,
    /// When it runs next.
    pub due: Instant,
    successes: i32,
    failures: i32,
    last_failure: Option<String>,
}

fn positive(v: Option<i32>, default: i32) -> i32 {
    v.filter(|v| *v > 0).unwrap_or(default)
}

impl Tracker {
    /// A tracker for `probe` of a container that started at `start`.
    pub fn new(kind: Kind, probe: Probe, start: Instant) -> Self {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Self {
            kind,
            probe,
            due: start + delay,
            successes: 0,
            failures: 0,
            last_failure: None,
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(positive(self.probe.period_seconds, 10) as u64)
    }

    /// Why the last attempt failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Takes the outcome of an attempt made at `now`.
    pub fn observe(&mut self, outcome: Outcome, now: Instant) -> Verdict {
        self.due = now + self.period();
        let success_threshold = match self.kind {
            // Upstream's validation holds startup and liveness probes to 1.
            Kind::Readiness => positive(self.probe.success_threshold, 1),
            _ => 1,
        };
        let failure_threshold = positive(self.probe.failure_threshold, 3);
        match outcome {
            Outcome::Success => {
                self.last_failure = None;
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                match self.kind {
                    Kind::Startup => Verdict::Started,
                    Kind::Readiness if self.successes >= success_threshold => Verdict::Ready(true),
                    _ => Verdict::Same,
                }
            }
            Outcome::Failure(why) => {
                self.last_failure = Some(why);
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.failures < failure_threshold {
                    return Verdict::Same;
                }
                match self.kind {
                    Kind::Readiness => Verdict::Ready(false),
                    _ => Verdict::Kill,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            period_seconds: Some(2),
            initial_delay_seconds: Some(5),
            ..Default::default()
        }
    }

    fn fail() -> Outcome {
        Outcome::Failure("no".into())
    }

    #[test]
    fn the_first_attempt_waits_for_the_initial_delay_then_the_period() {
        let start = Instant::now();
        let mut t = Tracker::new(Kind::Liveness, probe(1, 3), start);
        assert_eq!(t.due, start + Duration::from_secs(5));
        t.observe(Outcome::Success, start + Duration::from_secs(5));
        assert_eq!(t.due, start + Duration::from_secs(7));
    }

    #[test]
    fn liveness_kills_after_the_failure_threshold_in_a_row() {
        let now = Instant::now();
        let mut t = Tracker::new(Kind::Liveness, probe(1, 3), now);
        assert_eq!(t.observe(fail(), now), Verdict::Same);
        assert_eq!(t.observe(fail(), now), Verdict::Same);
        assert_eq!(t.observe(Outcome::Success, now), Verdict::Same);
        assert_eq!(t.failure(), None);
        assert_eq!(t.observe(fail(), now), Verdict::Same);
        assert_eq!(t.failure(), Some("no"));
        assert_eq!(t.observe(fail(), now), Verdict::Same);
        assert_eq!(t.observe(fail(), now), Verdict::Kill);
    }

    #[test]
    fn readiness_needs_its_success_threshold_and_startup_one_success() {
        let now = Instant::now();
        let mut r = Tracker::new(Kind::Readiness, probe(2, 1), now);
        assert_eq!(r.observe(Outcome::Success, now), Verdict::Same);
        assert_eq!(r.observe(Outcome::Success, now), Verdict::Ready(true));
        assert_eq!(r.observe(fail(), now), Verdict::Ready(false));
        let mut s = Tracker::new(Kind::Startup, probe(5, 2), now);
        assert_eq!(s.observe(fail(), now), Verdict::Same);
        assert_eq!(s.observe(Outcome::Success, now), Verdict::Started);
    }

    proptest! {
        /// Whatever the results, readiness only turns on after `success` passes in a row and
        /// off after `failure` failures in a row; liveness kills exactly then.
        #[test]
        fn thresholds_count_consecutive_results(
            results in proptest::collection::vec(any::<bool>(), 0..60),
            success in 1i32..4,
            failure in 1i32..4,
        ) {
            let now = Instant::now();
            let mut r = Tracker::new(Kind::Readiness, probe(success, failure), now);
            let mut l = Tracker::new(Kind::Liveness, probe(success, failure), now);
            let (mut ok_run, mut bad_run) = (0, 0);
            for pass in results {
                let outcome = if pass { Outcome::Success } else { fail() };
                if pass { ok_run += 1; bad_run = 0 } else { bad_run += 1; ok_run = 0 }
                let verdict = r.observe(outcome.clone(), now);
                if pass && ok_run >= success {
                    prop_assert_eq!(verdict, Verdict::Ready(true));
                } else if !pass && bad_run >= failure {
                    prop_assert_eq!(verdict, Verdict::Ready(false));
                } else {
                    prop_assert_eq!(verdict, Verdict::Same);
                }
                let killed = l.observe(outcome, now) == Verdict::Kill;
                prop_assert_eq!(killed, !pass && bad_run >= failure);
            }
        }
    }
}
