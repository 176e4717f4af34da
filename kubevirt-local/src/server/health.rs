//! `/livez`, `/readyz` and `/healthz` as kube-apiserver serves them: 200 `ok` when every check
//! passes, else 500 with one `[+]name ok` / `[-]name failed: reason` line per check; `?verbose`
//! lists the checks on success too, `?exclude=NAME` (repeatable as a comma list) skips checks, and
//! `/readyz/NAME` asks one check.
//!
//! Liveness is the server itself (`ping`, `storage`). Readiness adds the gates whoever embeds the
//! server registers ([`Readiness::hold`]) and opens ([`Readiness::open`]) — `kubevirt-local up`
//! holds it until the CRDs are established and the controllers run.

use super::state::State;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Which probe a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/livez`: is the server working.
    Live,
    /// `/readyz`: is the whole plane ready for clients.
    Ready,
    /// `/healthz` (deprecated upstream): the same checks as `/readyz`.
    Health,
}

impl Probe {
    /// The probe of a path's first segment.
    pub fn from_segment(s: &str) -> Option<Self> {
        Some(match s {
            "livez" => Probe::Live,
            "readyz" => Probe::Ready,
            "healthz" => Probe::Health,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Probe::Live => "livez",
            Probe::Ready => "readyz",
            Probe::Health => "healthz",
        }
    }
}

/// Readiness gates: named conditions that hold `/readyz` at 500 until opened.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Gate name → why it is still closed (`None`: open).
    gates: Mutex<BTreeMap<String, Option<String>>>,
}

impl Readiness {
    /// Hold readiness closed under `name` until [`open`](Self::open), saying `why`.
    pub fn hold(&self, name: &str, why: &str) {
        self.lock().insert(name.to_string(), Some(why.to_string()));
    }

    /// Open the gate `name`.
    pub fn open(&self, name: &str) {
        self.lock().insert(name.to_string(), None);
    }

    /// Whether every gate is open.
    pub fn is_open(&self) -> bool {
        self.lock().values().all(Option::is_none)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The answer to a probe: status code and plain-text body.
pub fn probe(
    state: &State,
    probe: Probe,
    check: Option<&str>,
    query: &BTreeMap<String, String>,
) -> (u16, String) {
    let mut checks: Vec<(String, Option<String>)> = vec![
        ("ping".into(), None),
        (
            "storage".into(),
            state
                .store
                .current_rv()
                .err()
                .map(|e| format!("the database is not readable: {e}")),
        ),
    ];
    if probe != Probe::Live {
        checks.extend(state.readiness.lock().clone());
    }
    if let Some(one) = check {
        return match checks.into_iter().find(|(name, _)| name == one) {
            Some((_, None)) => (200, "ok".into()),
            Some((_, Some(why))) => (500, format!("internal server error: {why}\n")),
            None => (404, "404 page not found\n".into()),
        };
    }
    let excluded: Vec<&str> = query
        .get("exclude")
        .map(|e| e.split(',').map(str::trim).collect())
        .unwrap_or_default();
    checks.retain(|(name, _)| !excluded.contains(&name.as_str()));
    let failed = checks.iter().any(|(_, why)| why.is_some());
    if !failed && !query.contains_key("verbose") {
        return (200, "ok".into());
    }
    let mut body = String::new();
    for (name, why) in &checks {
        match why {
            None => body.push_str(&format!("[+]{name} ok\n")),
            Some(why) => body.push_str(&format!("[-]{name} failed: {why}\n")),
        }
    }
    for name in excluded {
        body.push_str(&format!("[+]{name} excluded: ok\n"));
    }
    let outcome = if failed { "failed" } else { "passed" };
    body.push_str(&format!("{} check {outcome}\n", probe.name()));
    (if failed { 500 } else { 200 }, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    fn state() -> std::sync::Arc<State> {
        State::new(Store::in_memory().unwrap(), None, "127.0.0.1:1".into()).unwrap()
    }

    #[test]
    fn readiness_waits_for_every_gate_and_liveness_does_not() {
        let s = state();
        let q = BTreeMap::new();
        assert_eq!(probe(&s, Probe::Ready, None, &q), (200, "ok".into()));
        s.readiness
            .hold("poststarthook/crds", "waiting for the CRDs");
        let (code, body) = probe(&s, Probe::Ready, None, &q);
        assert_eq!(code, 500);
        assert_eq!(
            body,
            "[+]ping ok\n[+]storage ok\n[-]poststarthook/crds failed: waiting for the CRDs\nreadyz check failed\n"
        );
        assert_eq!(probe(&s, Probe::Live, None, &q), (200, "ok".into()));
        assert_eq!(probe(&s, Probe::Health, None, &q).0, 500);
        assert_eq!(
            probe(&s, Probe::Ready, Some("poststarthook/crds"), &q).0,
            500
        );
        assert_eq!(probe(&s, Probe::Ready, Some("ping"), &q).0, 200);
        let exclude = BTreeMap::from([("exclude".into(), "poststarthook/crds".into())]);
        assert_eq!(probe(&s, Probe::Ready, None, &exclude).0, 200);
        s.readiness.open("poststarthook/crds");
        assert!(s.readiness.is_open());
        let verbose = BTreeMap::from([("verbose".into(), String::new())]);
        let (code, body) = probe(&s, Probe::Ready, None, &verbose);
        assert_eq!(code, 200);
        assert!(
            body.ends_with("[+]poststarthook/crds ok\nreadyz check passed\n"),
            "{body}"
        );
    }
}
