//! API aggregation (`apiregistration.k8s.io/v1`), driven by the real kubectl: an aggregated
//! server (a small HTTPS server in this test that trusts only the front-proxy CA the API
//! server publishes in `kube-system/extension-apiserver-authentication`) behind an APIService
//! and a Service whose Endpoints point at it. Requests go through with the caller in
//! `X-Remote-*` headers and never its token; a websocket is spliced; an unauthenticated or
//! unauthorised caller is refused before anything is proxied; without endpoints the answer is
//! a 503 Status; the APIService's `Available` condition follows (FailedDiscoveryCheck → Passed
//! → MissingEndpoints → ServiceNotFound).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::HeaderMap;
use base64::Engine;
use common::Server;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

const GROUP: &str = "test.example.io";

/// The aggregated server: what it has seen, and where it listens.
struct Backend {
    at: SocketAddr,
    ca_pem: String,
    whoami_calls: Arc<AtomicUsize>,
}

fn app(calls: Arc<AtomicUsize>) -> axum::Router {
    axum::Router::new()
        .route(
            "/apis/test.example.io/v1",
            axum::routing::get(|| async {
                axum::Json(json!({"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": "test.example.io/v1",
                    "resources": [{"name": "widgets", "singularName": "widget", "namespaced": true,
                        "kind": "Widget", "verbs": ["get", "list"]}]}))
            }),
        )
        .route(
            "/apis/test.example.io/v1/whoami",
            axum::routing::get(move |headers: HeaderMap| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let all = |name: &str| -> Vec<String> {
                        headers
                            .get_all(name)
                            .iter()
                            .filter_map(|v| v.to_str().ok().map(str::to_string))
                            .collect()
                    };
                    axum::Json(json!({
                        "user": all("x-remote-user"),
                        "groups": all("x-remote-group"),
                        "authorization": all("authorization"),
                        "host": all("host"),
                    }))
                }
            }),
        )
        .route(
            "/apis/test.example.io/v1/echo",
            axum::routing::get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let Message::Text(t) = msg {
                            let _ = socket.send(Message::Text(format!("echo {t}").into())).await;
                        }
                    }
                })
            }),
        )
}

/// Start the aggregated server on `rt`: serving `agg.default.svc` with a CA of its own,
/// requiring a client certificate of `front_proxy_ca`.
fn start_backend(rt: &tokio::runtime::Runtime, front_proxy_ca: &str) -> Backend {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aggregated test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["agg.default.svc".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut front_proxy_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(calls.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let at = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A connection without the front proxy's certificate fails right here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend {
        at,
        ca_pem: ca.pem(),
        whoami_calls: calls,
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn eventually<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn available(s: &Server) -> Value {
    let o = s.ok(&["get", "apiservice", "v1.test.example.io", "-o", "json"]);
    let a: Value = serde_json::from_str(&o).unwrap();
    a["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Available")
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_reason(s: &Server, reason: &str) -> Value {
    eventually(&format!("Available reason {reason}"), 20, || {
        Some(available(s)).filter(|c| c["reason"] == reason)
    })
}

fn endpoints(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: agg, namespace: default}}\nsubsets:\n- addresses: [{{ip: 127.0.0.1}}]\n  ports: [{{name: https, port: {port}}}]\n"
    )
}

/// A websocket to `path` of the API server, as kubectl's streams open them.
async fn websocket_echo(s: &Server, token: &str, path: &str, text: &str) -> String {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ca = std::fs::read(s.dir.join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = s.url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut req = format!("wss://{host}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an answer within 10 s")
        .expect("a message")
        .unwrap();
    let _ = ws.close(None).await;
    answer.into_text().unwrap().to_string()
}

#[test]
fn an_apiservice_fronts_its_aggregated_server() {
    let s = Server::start("aggregation");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The front proxy's identity is published as kube-apiserver publishes it.
    let cm: Value = serde_json::from_str(&s.ok(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
        "-o",
        "json",
    ]))
    .unwrap();
    let data = &cm["data"];
    assert_eq!(
        data["requestheader-username-headers"],
        "[\"X-Remote-User\"]"
    );
    assert_eq!(data["requestheader-group-headers"], "[\"X-Remote-Group\"]");
    assert_eq!(
        data["requestheader-extra-headers-prefix"],
        "[\"X-Remote-Extra-\"]"
    );
    assert_eq!(
        data["requestheader-allowed-names"],
        "[\"front-proxy-client\"]"
    );
    let front_proxy_ca = data["requestheader-client-ca-file"].as_str().unwrap();
    assert!(front_proxy_ca.contains("BEGIN CERTIFICATE"), "{cm}");
    assert_eq!(
        data["client-ca-file"].as_str().unwrap(),
        std::fs::read_to_string(s.dir.join("client-ca.crt")).unwrap()
    );

    // Aggregated servers bound to the bootstrap reader Role may read it (and nothing else).
    s.ok(&[
        "create",
        "rolebinding",
        "auth-reader",
        "-n",
        "kube-system",
        "--role=extension-apiserver-authentication-reader",
        "--serviceaccount=default:default",
    ]);
    let can_i = |what: &str| {
        s.kubectl(&[
            "auth",
            "can-i",
            "get",
            what,
            "-n",
            "kube-system",
            "--as=system:serviceaccount:default:default",
        ])
    };
    assert_eq!(
        stdout(&can_i("configmap/extension-apiserver-authentication")).trim(),
        "yes"
    );
    assert_eq!(stdout(&can_i("configmap/other")).trim(), "no");

    let backend = start_backend(&rt, front_proxy_ca);
    // Nothing listens on the Endpoints' port at first.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&backend.ca_pem);
    let objects = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: agg, namespace: default}}\nspec:\n  ports: [{{name: https, port: 443, targetPort: 8443}}]\n---\n{}---\napiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: v1.test.example.io}}\nspec:\n  group: {GROUP}\n  version: v1\n  groupPriorityMinimum: 1000\n  versionPriority: 15\n  caBundle: {ca_bundle}\n  service: {{namespace: default, name: agg, port: 443}}\n",
        endpoints(closed_port)
    );
    let o = s.kubectl_stdin(&["create", "-f", "-"], Some(&objects));
    assert!(o.status.success(), "{}", stderr(&o));
    let failed = wait_reason(&s, "FailedDiscoveryCheck");
    assert_eq!(failed["status"], "False");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("failing or missing response from https://127.0.0.1:{closed_port}/apis/test.example.io/v1")),
        "{failed}"
    );

    // Pointed at the server: available, listed as kube-aggregator lists it.
    let o = s.kubectl_stdin(&["apply", "-f", "-"], Some(&endpoints(backend.at.port())));
    assert!(o.status.success(), "{}", stderr(&o));
    let passed = wait_reason(&s, "Passed");
    assert_eq!(passed["status"], "True");
    assert_eq!(passed["message"], "all checks passed");
    let table = s.ok(&["get", "apiservices"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SERVICE", "AVAILABLE", "AGE"], "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("v1.test.example.io"))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..3],
        ["v1.test.example.io", "default/agg", "True"],
        "{table}"
    );

    // Discovery: the group in /apis, the aggregated server's resources in api-resources.
    let apis: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/apis"])).unwrap();
    let group = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == GROUP)
        .unwrap_or_else(|| panic!("{apis}"));
    assert_eq!(
        group["preferredVersion"]["groupVersion"],
        "test.example.io/v1"
    );
    let g: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/apis/test.example.io"])).unwrap();
    assert_eq!(g["kind"], "APIGroup");
    // In aggregated discovery (`/apis` only, kubectl's first choice): the aggregated server's
    // document is fetched by this server, not by kubectl.
    let o = s.kubectl(&["api-resources", "--api-group", GROUP, "-v=6"]);
    let (resources, log) = (stdout(&o), stderr(&o));
    assert!(
        resources.contains("widgets") && resources.contains("test.example.io/v1"),
        "{resources}"
    );
    assert!(log.contains("/apis?timeout"), "{log}");
    assert!(!log.contains("/apis/test.example.io/v1?"), "{log}");

    // A request goes through: the caller in the front proxy's headers, its token never.
    let me: Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/apis/test.example.io/v1/whoami"])).unwrap();
    assert_eq!(me["user"], json!(["kubevirt-local-admin"]), "{me}");
    assert_eq!(
        me["groups"],
        json!(["system:masters", "system:authenticated"]),
        "{me}"
    );
    assert_eq!(me["authorization"], json!([]), "{me}");
    assert_eq!(me["host"], json!(["agg.default.svc"]), "{me}");
    assert_eq!(backend.whoami_calls.load(Ordering::SeqCst), 1);

    // Another user: refused before proxying until RBAC allows it, then proxied as itself.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .args(["kubeconfig", "--data-dir"])
        .arg(&s.dir)
        .args(["--user", "alice", "--group", "devs"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let alice = s.dir.join("alice.kubeconfig");
    std::fs::write(&alice, &o.stdout).unwrap();
    let as_alice = |args: &[&str]| kubevirt_testsupport::kubectl(&alice, args, None);
    let o = as_alice(&["get", "--raw", "/apis/test.example.io/v1/whoami"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Forbidden"), "{}", stderr(&o));
    let o = s.kubectl(&[
        "--token=not-a-token",
        "get",
        "--raw",
        "/apis/test.example.io/v1/whoami",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Unauthorized"), "{}", stderr(&o));
    assert_eq!(
        backend.whoami_calls.load(Ordering::SeqCst),
        1,
        "refused callers never reach the aggregated server"
    );
    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: whoami}\nrules: [{apiGroups: [test.example.io], resources: [whoami], verbs: [get, list]}]\n";
    let o = s.kubectl_stdin(&["create", "-f", "-"], Some(role));
    assert!(o.status.success(), "{}", stderr(&o));
    s.ok(&[
        "create",
        "clusterrolebinding",
        "alice-whoami",
        "--clusterrole=whoami",
        "--user=alice",
    ]);
    let o = as_alice(&["get", "--raw", "/apis/test.example.io/v1/whoami"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let me: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(me["user"], json!(["alice"]), "{me}");
    assert_eq!(
        me["groups"],
        json!(["devs", "system:authenticated"]),
        "{me}"
    );

    // A websocket is spliced both ways.
    let token = std::fs::read_to_string(s.dir.join("token")).unwrap();
    let answer = rt.block_on(websocket_echo(
        &s,
        token.trim(),
        "/apis/test.example.io/v1/echo",
        "hello",
    ));
    assert_eq!(answer, "echo hello");

    // No endpoints: a 503 Status, and the APIService says why.
    s.ok(&["delete", "endpoints", "agg"]);
    s.ok(&[
        "patch",
        "service",
        "agg",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"app":"agg"}}}"#,
    ]);
    let o = s.kubectl(&["get", "--raw", "/apis/test.example.io/v1/whoami"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ServiceUnavailable")
            || stderr(&o).contains("unable to handle the request"),
        "{}",
        stderr(&o)
    );
    let missing = wait_reason(&s, "MissingEndpoints");
    assert_eq!(missing["status"], "False");
    assert_eq!(
        missing["message"],
        "endpoints for service/agg in \"default\" have no addresses with port name \"https\""
    );
    let table = s.ok(&["get", "apiservice", "v1.test.example.io"]);
    assert!(table.contains("False (MissingEndpoints)"), "{table}");
    s.ok(&["delete", "service", "agg"]);
    let gone = wait_reason(&s, "ServiceNotFound");
    assert_eq!(gone["message"], "service/agg in \"default\" is not present");

    // Deleted: the group is gone from discovery and its paths are this server's again.
    s.ok(&["delete", "apiservice", "v1.test.example.io"]);
    let apis = s.ok(&["get", "--raw", "/apis"]);
    assert!(!apis.contains(GROUP), "{apis}");
    let o = s.kubectl(&["get", "--raw", "/apis/test.example.io/v1/whoami"]);
    assert!(stderr(&o).contains("NotFound"), "{}", stderr(&o));
    drop(rt);
}

#[test]
fn a_local_apiservice_is_available_and_proxies_nothing() {
    let s = Server::start("aggregation-local");
    let local = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1.apps}\nspec: {group: apps, version: v1, groupPriorityMinimum: 17800, versionPriority: 15}\n";
    let o = s.kubectl_stdin(&["create", "-f", "-"], Some(local));
    assert!(o.status.success(), "{}", stderr(&o));
    let cond = eventually("Local", 20, || {
        let o = s.ok(&["get", "apiservice", "v1.apps", "-o", "json"]);
        let a: Value = serde_json::from_str(&o).unwrap();
        Some(a["status"]["conditions"][0].clone()).filter(|c| c["reason"] == "Local")
    });
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["message"], "Local APIServices are always available");
    let table = s.ok(&["get", "apiservices"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>()
                == ["v1.apps", "Local", "True"]),
        "{table}"
    );
    // The local handler keeps serving its group.
    s.ok(&["get", "deployments"]);
}
