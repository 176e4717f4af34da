//! Size limits as kube-apiserver and etcd have them: a request body over 3 MiB and an object over
//! 1.5 MiB are 413 `Status` answers, and a large object updated over and over does not grow the
//! database without bound (the history is compacted to a byte budget); watches are bounded per
//! client and requests in flight per server and per user (429 with `Retry-After`). Driven
//! in-process through the real router over SQLite files, and over real HTTP where a slow client
//! matters.

use axum::body::Body;
use axum::http::{Method, Request};
use kubevirt_local::server::{State, router};
use kubevirt_local::storage::Store;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

async fn call(state: &Arc<State>, method: Method, path: &str, body: Vec<u8>) -> (u16, Value) {
    let content_type = if method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, v)
}

/// At most 300 characters of `v`, for messages about huge bodies.
fn short(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str, bytes: usize, fill: char) -> Vec<u8> {
    json!({"metadata": {"name": name}, "data": {"a": fill.to_string().repeat(bytes)}})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn oversized_requests_and_objects_are_413_status() {
    let s = State::new(Store::in_memory().unwrap(), None, "127.0.0.1:1".into()).unwrap();
    for (size, mentions) in [(4 << 20, "limit is 3145728"), (2 << 20, "too large")] {
        let (code, v) = call(&s, Method::POST, CMS, cm("big", size, 'x')).await;
        assert_eq!(code, 413, "{}", short(&v));
        assert_eq!(v["kind"], "Status", "{}", short(&v));
        assert_eq!(v["reason"], "RequestEntityTooLarge", "{}", short(&v));
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(mentions), "{msg}");
    }
    // Nothing was stored; an object under the limit is.
    let (code, _) = call(&s, Method::GET, &format!("{CMS}/big"), Vec::new()).await;
    assert_eq!(code, 404);
    let (code, v) = call(&s, Method::POST, CMS, cm("big", 1 << 20, 'x')).await;
    assert_eq!(code, 201, "{}", short(&v));
}

fn db_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn a_large_object_updated_100_times_does_not_grow_the_database_100_fold() {
    let dir = kubevirt_testsupport::tempdir("limits-db");
    let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
    let s = State::new(store, None, "127.0.0.1:1".into()).unwrap();
    const MIB: usize = 1 << 20;
    let (code, v) = call(&s, Method::POST, CMS, cm("big", MIB, 'a')).await;
    assert_eq!(code, 201, "{}", short(&v));
    let one = db_bytes(dir.path());
    for i in 0..100 {
        let fill = char::from(b'a' + (i % 26) as u8);
        let (code, v) = call(
            &s,
            Method::PATCH,
            &format!("{CMS}/big"),
            json!({"data": {"a": fill.to_string().repeat(MIB - i as usize)}})
                .to_string()
                .into_bytes(),
        )
        .await;
        assert!(code == 200, "update {i}: {code} {}", short(&v));
    }
    let after = db_bytes(dir.path());
    // The history keeps 16 MiB of changes; objects, indexes and the WAL add a few more.
    assert!(
        after < 40 * MIB as u64,
        "the database grew from {one} to {after} bytes over 100 updates of a 1 MiB object"
    );
    // The newest state is intact.
    let (code, v) = call(&s, Method::GET, &format!("{CMS}/big"), Vec::new()).await;
    assert_eq!(code, 200);
    assert_eq!(v["data"]["a"].as_str().unwrap().len(), MIB - 99);
}

/// The resident set of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_watchers_that_never_read_are_cut_off_and_their_buffers_freed() {
    use kubevirt_local::server::watch_buffer::{FULL_WAIT, MAX_BYTES};
    let s = State::new(Store::in_memory().unwrap(), None, "127.0.0.1:1".into()).unwrap();
    let (code, v) = call(&s, Method::POST, CMS, cm("big", 256 << 10, 'a')).await;
    assert_eq!(code, 201, "{}", short(&v));
    let before = rss();
    // 200 watches whose responses nobody reads.
    let mut stuck = Vec::new();
    for _ in 0..200 {
        let req = Request::builder()
            .uri(format!("{CMS}?watch=true"))
            .body(Body::empty())
            .unwrap();
        let resp = router(s.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        stuck.push(resp.into_body());
    }
    // 12 updates of a 256 KiB object: 3 MiB per watcher, over each one's budget.
    for i in 0..12u8 {
        let fill = char::from(b'b' + i);
        let patch = json!({"data": {"a": fill.to_string().repeat(256 << 10)}});
        let (code, v) = call(
            &s,
            Method::PATCH,
            &format!("{CMS}/big"),
            patch.to_string().into_bytes(),
        )
        .await;
        assert_eq!(code, 200, "{}", short(&v));
        assert!(
            s.watch_buffered.get() <= 200 * MAX_BYTES,
            "watch buffers hold {} bytes",
            s.watch_buffered.get()
        );
    }
    // Every watcher encodes every change (slow in a debug build), then waits FULL_WAIT on its
    // full buffer and is cut off.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.watch_buffered.get() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck watchers still hold {} bytes",
            s.watch_buffered.get()
        );
        tokio::time::sleep(FULL_WAIT).await;
    }
    eprintln!(
        "RSS before the watches {} MiB, after {} MiB",
        before >> 20,
        rss() >> 20
    );
    // Each stuck watch has ended: a client that finally reads sees the end and re-watches.
    for body in stuck {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            axum::body::to_bytes(body, usize::MAX),
        )
        .await
        .expect("a stuck watch was not closed")
        .unwrap();
    }
    // The server still serves new watches.
    let (code, _) = call(&s, Method::GET, &format!("{CMS}/big"), Vec::new()).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_client_may_hold_a_bounded_number_of_watches() {
    use kubevirt_local::server::watch_buffer::MAX_WATCHES_PER_CLIENT;
    let s = State::new(Store::in_memory().unwrap(), None, "127.0.0.1:1".into()).unwrap();
    let watch = |token: &str| {
        Request::builder()
            .uri(format!("{CMS}?watch=true"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let mut open = Vec::new();
    for _ in 0..MAX_WATCHES_PER_CLIENT {
        let resp = router(s.clone()).oneshot(watch("a")).await.unwrap();
        assert_eq!(resp.status(), 200);
        open.push(resp);
    }
    let resp = router(s.clone()).oneshot(watch("a")).await.unwrap();
    assert_eq!(resp.status(), 429);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["reason"], "TooManyRequests", "{v}");
    // Another client is not affected; a closed watch frees its slot.
    let resp = router(s.clone()).oneshot(watch("b")).await.unwrap();
    assert_eq!(resp.status(), 200);
    open.pop();
    let resp = router(s.clone()).oneshot(watch("a")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// A request over real HTTP/1.1, on a connection of its own.
struct Raw {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

/// Send `method path` with `token`'s credential and `body`, all but `held` bytes of the body.
async fn start(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
    held: usize,
) -> Raw {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let split = body.len() - held;
    stream.write_all(&body[..split]).await.unwrap();
    stream.flush().await.unwrap();
    Raw {
        stream,
        rest: body[split..].to_vec(),
    }
}

/// The answer's status, `Retry-After` header and body.
struct Answer {
    code: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Raw {
    /// Send the rest of the body and read the whole answer.
    async fn finish(mut self) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(&self.rest).await.unwrap();
        let mut bytes = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.stream.read_to_end(&mut bytes),
        )
        .await
        .expect("no answer in 30 s")
        .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
        let retry_after = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().to_string())
        });
        // The body may be chunked: the JSON object is between the first `{` and the last `}`.
        let json = match (body.find('{'), body.rfind('}')) {
            (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or_default(),
            _ => Value::String(body.to_string()),
        };
        Answer {
            code,
            retry_after,
            body: json,
        }
    }

    /// Read the status line only (a watch's answer never ends).
    async fn status(&mut self) -> u16 {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.stream.read(&mut buf),
        )
        .await
        .expect("no status line in 10 s")
        .unwrap();
        let line = String::from_utf8_lossy(&buf[..n]);
        line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap()
    }
}

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> Answer {
    start(addr, method, path, token, body, 0)
        .await
        .finish()
        .await
}

/// Wait until the server counts `n` mutating requests in flight.
async fn until_in_flight(s: &State, n: usize) {
    use kubevirt_local::server::inflight::Kind;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.inflight.in_flight(Kind::Mutating) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} mutating requests in flight, not {n}",
            s.inflight.in_flight(Kind::Mutating)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn assert_too_many(a: &Answer, who: &str) {
    assert_eq!(a.code, 429, "{who}: {}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("1"), "{who}: Retry-After");
    assert_eq!(a.body["kind"], "Status", "{who}: {}", a.body);
    assert_eq!(a.body["reason"], "TooManyRequests", "{who}: {}", a.body);
    assert_eq!(a.body["code"], 429, "{who}: {}", a.body);
    assert_eq!(
        a.body["message"], "Too many requests, please try again later.",
        "{who}"
    );
}

/// Requests in flight are capped as kube-apiserver caps them, with a share per user: slow
/// clients holding their bodies back fill first one user's share, then the cap; the next
/// request gets a 429 Status with Retry-After, while other users, administrators, read-only
/// requests and watches are still served; once the held requests finish, all is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_fill_a_users_share_and_the_cap_then_get_429_with_retry_after() {
    use kubevirt_local::semantics::user_token::{UserClaims, UserSigner};
    use kubevirt_local::server::inflight::Limits;
    const ADMIN: &str = "the-admin-token";
    let s = State::new(
        Store::in_memory().unwrap(),
        Some(ADMIN.into()),
        "127.0.0.1:1".into(),
    )
    .unwrap();
    // 4 mutating requests in flight at most, 2 of them one user's.
    s.inflight.set_limits(Limits::new(8, 4, 50).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kubevirt_local::server::serve(
        listener,
        s.clone(),
        None,
        async {
            let _ = stopped.await;
        },
    ));
    let signer = UserSigner::from_secret(ADMIN.as_bytes());
    let now = jiff::Timestamp::now().as_second();
    let token = |name: &str| signer.issue(&UserClaims::new(name, &[]).unwrap(), now, 3600);
    let (alice, bob, carol) = (token("alice"), token("bob"), token("carol"));
    let subjects: Vec<Value> = ["alice", "bob", "carol"]
        .map(|u| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u}))
        .into();
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "testers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": subjects});
    let a = request(
        addr,
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        ADMIN,
        binding.to_string().as_bytes(),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);

    // Alice sends two creates whose bodies stall half-way: her share.
    let mut held = Vec::new();
    for i in 0..2 {
        let body = cm(&format!("alice-{i}"), 64, 'a');
        held.push(start(addr, "POST", CMS, &alice, &body, 20).await);
        until_in_flight(&s, i + 1).await;
    }
    assert_too_many(
        &request(addr, "POST", CMS, &alice, &cm("alice-x", 8, 'a')).await,
        "alice over her share",
    );
    // Bob is served; alice's reads (another cap) and her watch (long-running) too.
    let a = request(addr, "POST", CMS, &bob, &cm("bob-0", 8, 'b')).await;
    assert_eq!(a.code, 201, "bob: {}", a.body);
    let a = request(addr, "GET", CMS, &alice, b"").await;
    assert_eq!(a.code, 200, "alice's list: {}", a.body);
    let mut watch = start(addr, "GET", &format!("{CMS}?watch=true"), &alice, b"", 0).await;
    assert_eq!(watch.status().await, 200, "alice's watch");

    // Bob holds two more: the cap is full, and carol, who holds none, is refused.
    for i in 0..2 {
        let body = cm(&format!("bob-held-{i}"), 64, 'b');
        held.push(start(addr, "POST", CMS, &bob, &body, 20).await);
        until_in_flight(&s, 3 + i).await;
    }
    assert_too_many(
        &request(addr, "POST", CMS, &carol, &cm("carol-0", 8, 'c')).await,
        "carol over the cap",
    );
    // The administrator (system:masters, as `up`'s own components) is always answered.
    let a = request(addr, "POST", CMS, ADMIN, &cm("admin-0", 8, 'z')).await;
    assert_eq!(a.code, 201, "the administrator: {}", a.body);

    // The held requests finish and are stored; everyone is served again.
    for h in held {
        let a = h.finish().await;
        assert_eq!(a.code, 201, "a held create: {}", a.body);
    }
    until_in_flight(&s, 0).await;
    for (who, t) in [("alice", &alice), ("carol", &carol)] {
        let a = request(addr, "POST", CMS, t, &cm(&format!("{who}-after"), 8, 'd')).await;
        assert_eq!(a.code, 201, "{who} after: {}", a.body);
    }
    let a = request(addr, "GET", CMS, &alice, b"").await;
    let names: Vec<&str> = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    for name in [
        "alice-0",
        "alice-1",
        "bob-held-0",
        "bob-held-1",
        "carol-after",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(!names.contains(&"alice-x") && !names.contains(&"carol-0"));
    drop(watch);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Bad cap flags are refused before anything starts, naming the flag and what is wrong.
#[test]
fn bad_inflight_flags_are_refused_by_name() {
    let dir = kubevirt_testsupport::tempdir("limits-flags");
    let data = dir.path().join("data");
    for (command, flag, value, says) in [
        (
            "apiserver",
            "--max-requests-inflight",
            "0",
            "must be at least 1",
        ),
        (
            "apiserver",
            "--max-mutating-requests-inflight",
            "lots",
            "not a whole number",
        ),
        (
            "up",
            "--max-requests-inflight-per-user-percent",
            "150",
            "1 to 100, not 150",
        ),
        (
            "up",
            "--max-requests-inflight-per-user-percent",
            "0",
            "1 to 100, not 0",
        ),
        (
            "up",
            "--max-mutating-requests-inflight",
            "-3",
            "not a whole number",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
            .args([command, "--data-dir"])
            .arg(&data)
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command} {flag}={value}: {err}"
        );
        assert!(
            err.contains(flag) && err.contains(says),
            "{command} {flag}={value}: {err}"
        );
        assert!(
            !data.exists(),
            "{command} {flag}={value} made the data directory"
        );
    }
}
