//! Requests in flight, capped as kube-apiserver's `--max-requests-inflight` (read-only: get,
//! list) and `--max-mutating-requests-inflight` (everything else) cap them, with a per-user share
//! of each cap so one client cannot take it all.
//!
//! A request holds its slot from the moment its headers are in until its answer is made, so a
//! client that sends a body slowly (or never) holds a slot the whole time, as it holds a
//! goroutine in kube-apiserver. Long-running requests (watches; exec, attach, port-forward, log,
//! proxy; websocket and SPDY upgrades such as a VMI's console; uploads through the upload proxy)
//! are not counted, as upstream's long-running check exempts them; open watches have their own
//! per-client cap ([`super::watch_buffer::MAX_WATCHES_PER_CLIENT`]).
//!
//! A request over a cap is answered 429 with a `TooManyRequests` Status and `Retry-After: 1`,
//! which client-go and kubectl honour by waiting and retrying. As upstream, `system:masters`
//! are never refused (they take a slot when one is free): the administrator, and with it every
//! in-process controller, the kubelet and the node agent of `up`, which all use the data
//! directory's token, always get an answer.
//!
//! The share is upstream's API Priority and Fairness in spirit, not in detail: no priority
//! levels, flow schemas or queues, only a per-user bound (a percentage of each cap, at least
//! one) next to the global one. A refused request is refused at once instead of waiting in a
//! queue; the client's retry is the queue.

use super::State;
use super::authn;
use super::route::{self, Route};
use crate::x509::PeerChain;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// kube-apiserver's default `--max-requests-inflight`.
pub const DEFAULT_READ_ONLY: usize = 400;
/// kube-apiserver's default `--max-mutating-requests-inflight`.
pub const DEFAULT_MUTATING: usize = 200;
/// The default share of each cap one user may hold, in percent.
pub const DEFAULT_PER_USER_PERCENT: usize = 50;
/// kube-apiserver's message for a refused request.
pub const MESSAGE: &str = "Too many requests, please try again later.";
/// How long a refused client should wait, in seconds (the `Retry-After` header).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Why limits are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A cap of zero would refuse every request.
    #[error("{0} must be at least 1 (a cap of 0 would refuse every request)")]
    Zero(&'static str),
    /// The per-user share is a percentage.
    #[error("the per-user share is a percentage of each cap: 1 to 100, not {0}")]
    Percent(usize),
}

/// The caps on requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    read_only: usize,
    mutating: usize,
    per_user_percent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            read_only: DEFAULT_READ_ONLY,
            mutating: DEFAULT_MUTATING,
            per_user_percent: DEFAULT_PER_USER_PERCENT,
        }
    }
}

impl Limits {
    /// At most `read_only` get and list requests and `mutating` other requests in flight; one
    /// user at most `per_user_percent` of each (rounded up).
    pub fn new(
        read_only: usize,
        mutating: usize,
        per_user_percent: usize,
    ) -> Result<Self, LimitsError> {
        if read_only == 0 {
            return Err(LimitsError::Zero("the read-only requests in flight"));
        }
        if mutating == 0 {
            return Err(LimitsError::Zero("the mutating requests in flight"));
        }
        if !(1..=100).contains(&per_user_percent) {
            return Err(LimitsError::Percent(per_user_percent));
        }
        Ok(Self {
            read_only,
            mutating,
            per_user_percent,
        })
    }

    /// The cap of `kind`.
    pub fn total(&self, kind: Kind) -> usize {
        match kind {
            Kind::ReadOnly => self.read_only,
            Kind::Mutating => self.mutating,
        }
    }

    /// How many requests of `kind` one user may have in flight.
    pub fn per_user(&self, kind: Kind) -> usize {
        self.total(kind)
            .saturating_mul(self.per_user_percent)
            .div_ceil(100)
            .max(1)
    }
}

/// Which cap a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// get and list (upstream's non-mutating verbs; watches are long-running).
    ReadOnly,
    /// Everything else.
    Mutating,
}

impl Kind {
    /// Its place in [`Counts`]' arrays.
    fn index(self) -> usize {
        match self {
            Self::ReadOnly => 0,
            Self::Mutating => 1,
        }
    }

    fn of(method: &Method) -> Self {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Self::ReadOnly
        } else {
            Self::Mutating
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// In flight, by [`Kind::index`].
    total: [usize; 2],
    /// In flight per user, by [`Kind::index`]; looked up by the borrowed name (no copy per
    /// request); a user with nothing in flight has no entry.
    per_user: HashMap<String, [usize; 2]>,
}

/// The requests in flight, per kind and per user, against the [`Limits`].
#[derive(Debug, Default)]
pub struct Inflight {
    limits: Mutex<Limits>,
    counts: Mutex<Counts>,
}

/// A request's slot, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    inflight: Arc<Inflight>,
    kind: Kind,
    user: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let i = self.kind.index();
        let mut c = self.inflight.lock_counts();
        c.total[i] = c.total[i].saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(self.user.as_str()) {
            n[i] = n[i].saturating_sub(1);
            if *n == [0, 0] {
                c.per_user.remove(self.user.as_str());
            }
        }
    }
}

impl Inflight {
    fn lock_counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caps in force.
    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace the caps (requests already in flight keep their slots).
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// Requests of `kind` in flight now.
    pub fn in_flight(&self, kind: Kind) -> usize {
        self.lock_counts().total[kind.index()]
    }

    /// A slot for one more request of `kind` by `user`, or `None` when the cap or the user's
    /// share of it is taken.
    pub fn acquire(self: &Arc<Self>, kind: Kind, user: &str) -> Option<Permit> {
        let limits = self.limits();
        let i = kind.index();
        let mut c = self.lock_counts();
        let mine = c.per_user.get(user).map_or(0, |n| n[i]);
        if c.total[i] >= limits.total(kind) || mine >= limits.per_user(kind) {
            return None;
        }
        c.total[i] += 1;
        match c.per_user.get_mut(user) {
            Some(n) => n[i] += 1,
            None => {
                let mut n = [0; 2];
                n[i] = 1;
                c.per_user.insert(user.to_string(), n);
            }
        }
        Some(Permit {
            inflight: Arc::clone(self),
            kind,
            user: user.to_string(),
        })
    }
}

/// Whether a request runs for as long as the client wants (and so is not counted), as
/// kube-apiserver's long-running check (verbs watch and proxy; subresources attach, exec,
/// portforward, log, proxy) plus every protocol upgrade and the upload proxy's streams.
pub fn long_running(method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
    if headers.contains_key(header::UPGRADE) {
        return true;
    }
    let path = uri.path();
    if path.starts_with(kubevirt_controller::cdi::upload::api::PROXY_PREFIX) {
        return true;
    }
    let query = route::query(uri.query());
    if *method == Method::GET && query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return true;
    }
    if path.split('/').any(|s| s == "watch") {
        return true;
    }
    match route::parse(path) {
        Some(Route::Object(t)) => matches!(
            t.sub.as_deref(),
            Some("attach" | "exec" | "portforward" | "log" | "proxy")
        ),
        _ => false,
    }
}

/// The 429 a refused request gets.
fn too_many_requests() -> Response {
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": MESSAGE,
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": RETRY_AFTER_SECONDS},
        "code": 429,
    });
    let mut r = Response::new(Body::from(status.to_string()));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    r
}

/// The middleware: count the request against its cap while the rest of the server reads its
/// body and answers it, or answer 429.
pub async fn limit(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if long_running(req.method(), req.uri(), req.headers()) {
        return next.run(req).await;
    }
    // Who asks: a request that does not authenticate counts as anonymous (and gets its 401
    // from the handler, in its turn).
    let user = authn::authenticate(&state, req.headers(), req.extensions().get::<PeerChain>());
    let (name, master) = match &user {
        Ok(u) => (
            u.name.as_str(),
            u.groups
                .iter()
                .any(|g| g == crate::semantics::rbac::MASTERS),
        ),
        Err(_) => ("system:anonymous", false),
    };
    let kind = Kind::of(req.method());
    let permit = state.inflight.acquire(kind, name);
    if permit.is_none() && !master {
        tracing::debug!(user = name, ?kind, "request refused: too many in flight");
        return too_many_requests();
    }
    if let Ok(u) = user {
        req.extensions_mut().insert(authn::Authenticated(u));
    }
    let r = next.run(req).await;
    drop(permit);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_a_share_of_each_cap_and_the_caps_hold() {
        let f = Arc::new(Inflight::default());
        f.set_limits(Limits::new(4, 3, 50).unwrap());
        assert_eq!(f.limits().per_user(Kind::ReadOnly), 2);
        assert_eq!(f.limits().per_user(Kind::Mutating), 2, "rounded up");
        let a1 = f.acquire(Kind::Mutating, "a").unwrap();
        let _a2 = f.acquire(Kind::Mutating, "a").unwrap();
        assert!(f.acquire(Kind::Mutating, "a").is_none(), "a's share");
        let _r = f.acquire(Kind::ReadOnly, "a").unwrap();
        let _b = f.acquire(Kind::Mutating, "b").unwrap();
        assert!(f.acquire(Kind::Mutating, "c").is_none(), "the cap");
        assert_eq!(f.in_flight(Kind::Mutating), 3);
        drop(a1);
        assert_eq!(f.in_flight(Kind::Mutating), 2);
        assert!(f.acquire(Kind::Mutating, "c").is_some());
    }

    #[test]
    fn a_user_with_nothing_in_flight_is_forgotten() {
        let f = Arc::new(Inflight::default());
        let read = f.acquire(Kind::ReadOnly, "a").unwrap();
        let write = f.acquire(Kind::Mutating, "a").unwrap();
        drop(read);
        assert_eq!(f.lock_counts().per_user.get("a"), Some(&[0, 1]));
        drop(write);
        assert!(f.lock_counts().per_user.is_empty());
        assert_eq!(f.in_flight(Kind::ReadOnly) + f.in_flight(Kind::Mutating), 0);
    }

    #[test]
    fn bad_limits_are_refused_by_name() {
        assert_eq!(
            Limits::new(0, 1, 50),
            Err(LimitsError::Zero("the read-only requests in flight"))
        );
        assert!(matches!(Limits::new(1, 0, 50), Err(LimitsError::Zero(_))));
        assert_eq!(Limits::new(1, 1, 0), Err(LimitsError::Percent(0)));
        assert_eq!(Limits::new(1, 1, 101), Err(LimitsError::Percent(101)));
        assert_eq!(Limits::new(1, 1, 1).unwrap().per_user(Kind::Mutating), 1);
    }

    #[test]
    fn long_running_requests_are_recognised() {
        let lr = |m: Method, uri: &str, upgrade: bool| {
            let mut h = HeaderMap::new();
            if upgrade {
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            long_running(&m, &uri.parse().unwrap(), &h)
        };
        let cms = "/api/v1/namespaces/default/configmaps";
        assert!(lr(Method::GET, &format!("{cms}?watch=true"), false));
        assert!(lr(
            Method::GET,
            "/api/v1/watch/namespaces/default/pods",
            false
        ));
        assert!(lr(Method::GET, "/api/v1/namespaces/d/pods/p/log", false));
        assert!(lr(Method::POST, "/api/v1/namespaces/d/pods/p/exec", false));
        assert!(lr(
            Method::GET,
            "/apis/subresources.kubevirt.io/v1/namespaces/d/virtualmachineinstances/v/console",
            true
        ));
        assert!(!lr(Method::GET, cms, false));
        assert!(!lr(Method::POST, cms, false));
        assert!(!lr(Method::GET, &format!("{cms}?watch=false"), false));
    }
}
