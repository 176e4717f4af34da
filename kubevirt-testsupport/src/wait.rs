//! Waiting for something a test caused: poll a probe until it yields a value or time is up.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long [`eventually`] and [`eventually_async`] wait: generous for a loaded CI machine.
pub const TIMEOUT: Duration = Duration::from_secs(60);

const INTERVAL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Some`, for up to [`TIMEOUT`].
///
/// # Panics
/// When time is up: "timed out waiting for {what}".
pub fn eventually<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    eventually_within(TIMEOUT, what, probe)
}

/// Polls `probe` until it returns `Some`, for up to `timeout`.
///
/// # Panics
/// When time is up.
pub fn eventually_within<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({timeout:?})"
        );
        std::thread::sleep(INTERVAL);
    }
}

/// [`eventually`] for async probes, sleeping on the tokio timer between polls.
///
/// # Panics
/// When time is up.
pub async fn eventually_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({TIMEOUT:?})"
        );
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = eventually("n to reach 3", || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "timed out waiting for nothing")]
    fn panics_naming_what_never_came() {
        eventually_within(Duration::from_millis(120), "nothing", || None::<()>);
    }
}
