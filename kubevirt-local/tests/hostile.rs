//! The API server under hostile or careless clients: malformed bodies, ill-typed built-in
//! objects and bad metadata get a 4xx `Status` naming what is wrong and
//! change nothing; nothing answers 5xx. Driven in-process through the real router over SQLite.

use axum::body::Body;
use axum::http::{Method, Request};
use kubevirt_local::server::{State, router};
use kubevirt_local::storage::Store;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

fn state() -> Arc<State> {
    State::new(Store::in_memory().unwrap(), None, "127.0.0.1:1".into()).unwrap()
}

async fn call(
    state: &Arc<State>,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
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

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";
const SMP: &str = "application/strategic-merge-patch+json";

async fn seed(s: &Arc<State>) -> Value {
    let (code, v) = call(
        s,
        Method::POST,
        CMS,
        JSON,
        json!({"metadata": {"name": "cm"}, "data": {"a": "1"}})
            .to_string()
            .into(),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    v
}

/// At most 300 characters of `v`, for messages about huge bodies.
fn short(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

fn assert_status(code: u16, v: &Value, want: u16, mentions: &str) {
    assert_eq!(code, want, "{}", short(v));
    assert_eq!(v["kind"], "Status", "{}", short(v));
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(mentions),
        "{msg:?} should mention {mentions:?}"
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_status_never_a_panic() {
    let s = state();
    let before = seed(&s).await;
    let item = format!("{CMS}/cm");

    let (code, v) = call(&s, Method::POST, CMS, JSON, b"[1,2,3]".to_vec()).await;
    assert_status(code, &v, 400, "JSON object");
    let (code, v) = call(&s, Method::POST, CMS, JSON, br#""x""#.to_vec()).await;
    assert_status(code, &v, 400, "JSON object");
    let (code, v) = call(&s, Method::POST, CMS, JSON, br#"{"metadata":"x"}"#.to_vec()).await;
    assert_status(code, &v, 400, "metadata");

    for ct in [MERGE, SMP] {
        let (code, v) = call(
            &s,
            Method::PATCH,
            &item,
            ct,
            br#"{"metadata":"x"}"#.to_vec(),
        )
        .await;
        assert!(code == 400 || code == 422, "{ct}: {code} {v}");
        assert!(v["message"].as_str().unwrap().contains("metadata"), "{v}");
        let (code, v) = call(&s, Method::PATCH, &item, ct, b"[1]".to_vec()).await;
        assert!(code == 400 || code == 422, "{ct}: {code} {v}");
    }
    let mut put = before.clone();
    put["metadata"] = json!("x");
    let (code, v) = call(&s, Method::PUT, &item, JSON, put.to_string().into()).await;
    assert_status(code, &v, 400, "metadata");
    let (code, v) = call(&s, Method::PUT, &item, JSON, b"[1]".to_vec()).await;
    assert_status(code, &v, 400, "JSON object");

    // Nothing changed.
    let (code, after) = call(&s, Method::GET, &item, JSON, Vec::new()).await;
    assert_eq!(code, 200);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn built_in_kinds_are_type_checked_with_field_paths() {
    let s = state();
    let bad = [
        (
            json!({"metadata": {"name": "a"}, "data": {"a": 1}}),
            "data.a",
        ),
        (
            json!({"metadata": {"name": "b", "labels": 5}}),
            "metadata.labels",
        ),
        (
            json!({"metadata": {"name": "c", "labels": {"Bad Key!": "v"}}}),
            "metadata.labels",
        ),
        (
            json!({"metadata": {"name": "d", "labels": {"ok": "v v"}}}),
            "metadata.labels",
        ),
        (
            json!({"metadata": {"name": "e", "annotations": {"a/b/c": "v"}}}),
            "metadata.annotations",
        ),
        (json!({"metadata": {"name": "Bad_Name"}}), "metadata.name"),
    ];
    for (body, field) in bad {
        let (code, v) = call(&s, Method::POST, CMS, JSON, body.to_string().into()).await;
        assert_status(code, &v, 422, field);
    }
    // A pod's containers must be a list of objects; a Service name is a DNS label.
    let (code, v) = call(
        &s,
        Method::POST,
        "/api/v1/namespaces/default/pods",
        JSON,
        json!({"metadata": {"name": "p"}, "spec": {"containers": "x"}})
            .to_string()
            .into(),
    )
    .await;
    assert_status(code, &v, 422, "spec.containers");
    let (code, v) = call(
        &s,
        Method::POST,
        "/api/v1/namespaces/default/services",
        JSON,
        json!({"metadata": {"name": "a.b"}, "spec": {"ports": [{"port": 80}]}})
            .to_string()
            .into(),
    )
    .await;
    assert_status(code, &v, 422, "metadata.name");
    // Nothing was stored.
    let (code, list) = call(&s, Method::GET, CMS, JSON, Vec::new()).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    // The same rules hold for updates and patches.
    seed(&s).await;
    let (code, v) = call(
        &s,
        Method::PATCH,
        &format!("{CMS}/cm"),
        MERGE,
        br#"{"data":{"a":1}}"#.to_vec(),
    )
    .await;
    assert_status(code, &v, 422, "data.a");
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z!. /]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_string()),
                    Just("name".to_string()),
                    Just("labels".to_string()),
                    Just("spec".to_string()),
                    Just("data".to_string()),
                    Just("containers".to_string()),
                    Just("template".to_string()),
                    Just("kind".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn arbitrary_bodies_never_answer_5xx(body in arbitrary_json(), with_meta in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let s = state();
            seed(&s).await;
            let mut body = body;
            if with_meta && let Some(m) = body.as_object_mut() {
                m.insert("metadata".into(), json!({"name": "cm"}));
            }
            let bytes = body.to_string().into_bytes();
            let paths = [
                ("/api/v1/namespaces/default/configmaps", "/api/v1/namespaces/default/configmaps/cm"),
                ("/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/pods/cm"),
                ("/apis/apps/v1/namespaces/default/deployments", "/apis/apps/v1/namespaces/default/deployments/cm"),
                ("/api/v1/namespaces", "/api/v1/namespaces/default"),
            ];
            for (collection, item) in paths {
                for (m, p, ct) in [
                    (Method::POST, collection, JSON),
                    (Method::PUT, item, JSON),
                    (Method::PATCH, item, MERGE),
                    (Method::PATCH, item, SMP),
                    (Method::PATCH, item, "application/json-patch+json"),
                    (Method::PATCH, item, "application/apply-patch+yaml"),
                ] {
                    let path = if ct.starts_with("application/apply") { format!("{p}?fieldManager=t") } else { p.to_string() };
                    let (code, v) = call(&s, m.clone(), &path, ct, bytes.clone()).await;
                    assert!(code < 500, "{m} {path} {ct} {body}: {code} {v}");
                }
            }
        });
    }
}
