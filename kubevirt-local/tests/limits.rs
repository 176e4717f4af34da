//! Size limits as kube-apiserver and etcd have them: a request body over 3 MiB and an object over
//! 1.5 MiB are 413 `Status` answers, and a large object updated over and over does not grow the
//! database without bound (the history is compacted to a byte budget). Driven in-process through
//! the real router over SQLite files.

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
