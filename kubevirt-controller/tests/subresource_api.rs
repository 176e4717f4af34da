//! `kubevirt-controller api`'s server on its own (what a cluster's APIService reaches): TLS with
//! the given certificate; discovery for anyone; a lifecycle request without credentials is 401
//! as a metav1.Status; a path it does not serve is 404.

#[allow(unused_imports)]
mod common;

use std::process::Command;

use common::Cluster;
use kubevirt_controller::api::agents::{Addressing, NodeAgents};
use kubevirt_controller::api::serve::{serve_tls, tls_config};
use kubevirt_controller::api::{Authentication, Subresources};

fn curl(args: &[&str]) -> (String, String) {
    let o = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_server_authenticates_callers() {
    let c = Cluster::start(false).await;
    let certs = c.dir.join("serving");
    std::fs::create_dir_all(&certs).unwrap();
    kubevirt_local::setup::tls(&certs).unwrap();
    let tls = tls_config(&certs.join("tls.crt"), &certs.join("tls.key"), None).unwrap();
    let app = Subresources {
        client: c.client.clone(),
        agents: NodeAgents {
            addressing: Addressing::NodePort {
                port: 8186,
                tls: None,
            },
            token: "t".into(),
        },
        authentication: Authentication::Cluster,
    }
    .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(serve_tls(listener, app, tls, std::future::pending()));
    let ca = certs.join("ca.crt");
    let ca = ca.to_str().unwrap().to_string();

    let (url2, ca2) = (url.clone(), ca.clone());
    let (body, code) = tokio::task::spawn_blocking(move || {
        curl(&[
            "--cacert",
            &ca2,
            &format!("{url2}/apis/subresources.kubevirt.io/v1"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("virtualmachines/start"), "{body}");

    let (url2, ca2) = (url.clone(), ca.clone());
    let (body, code) = tokio::task::spawn_blocking(move || {
        curl(&[
            "--cacert",
            &ca2,
            "-X",
            "PUT",
            &format!("{url2}/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/start"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, "401", "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Unauthorized");

    let (body, code) = tokio::task::spawn_blocking(move || {
        curl(&[
            "--cacert",
            &ca,
            &format!("{url}/apis/subresources.kubevirt.io/v2/nothing"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, "404", "{body}");
}

/// The node agent's endpoint over TLS (across nodes): a caller trusting the agents' CA gets the
/// agent's own answer (here: no launcher runs that VMI), a wrong token is refused, and a plain
/// TCP caller gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_agent_endpoint_speaks_tls() {
    use kubevirt_controller::node::endpoint::{
        self, AgentCallError, AgentOp, AgentRequest, AgentTls, EndpointConfig,
    };
    let dir = kubevirt_testsupport::tempdir("agent-tls");
    kubevirt_local::setup::tls(&dir).unwrap();
    let server = tls_config(&dir.join("tls.crt"), &dir.join("tls.key"), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let config = EndpointConfig {
        run_root: dir.join("run"),
        token: "secret".into(),
    };
    tokio::spawn(endpoint::serve_tls(listener, config, server));
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let tls = AgentTls::trusting(&ca, "localhost".into()).unwrap();
    let request = |token: &str| AgentRequest {
        token: token.into(),
        op: AgentOp::Pause,
        namespace: "default".into(),
        name: "vm1".into(),
        uid: "0123456789".into(),
    };
    let e = endpoint::call(address, &request("secret"), Some(&tls))
        .await
        .err()
        .expect("no launcher runs vm1");
    let AgentCallError::Refused(why) = e else {
        panic!("the agent itself answers: {e}");
    };
    assert!(why.contains("control.sock"), "{why}");
    let e = endpoint::call(address, &request("guess"), Some(&tls))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("token is wrong"), "{e}");
    // The console over TLS: a console socket that echoes stands for the launcher's.
    let run_dir = endpoint::run_dir(&dir.join("run"), "default", "vm1", "0123456789").unwrap();
    std::fs::create_dir_all(&run_dir).unwrap();
    let console = tokio::net::UnixListener::bind(run_dir.join("console.sock")).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = console.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let mut attach = request("secret");
    attach.op = AgentOp::Console;
    let mut stream = endpoint::call(address, &attach, Some(&tls)).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let inner = stream.get_mut();
        inner.write_all(b"uname\r").await.unwrap();
        inner.flush().await.unwrap();
        let mut echoed = [0u8; 6];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"uname\r");
    }

    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        endpoint::call(address, &request("secret"), None),
    )
    .await;
    assert!(!matches!(plain, Ok(Ok(_))), "a plain caller is not served");
}

/// The aggregator's front-proxy client certificate makes `X-Remote-User` trusted (the request
/// goes on to authorisation); the same header without the certificate is not trusted (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_proxy_headers_are_trusted_only_with_its_certificate() {
    let c = Cluster::start(false).await;
    let dir = c.dir.join("front-proxy");
    std::fs::create_dir_all(&dir).unwrap();
    kubevirt_local::setup::tls(&dir).unwrap();
    // The front-proxy CA and the aggregator's client certificate.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "front-proxy-client");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("client.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();

    let tls = tls_config(&dir.join("tls.crt"), &dir.join("tls.key"), Some(&ca.pem())).unwrap();
    let app = Subresources {
        client: c.client.clone(),
        agents: NodeAgents {
            addressing: Addressing::NodePort {
                port: 8186,
                tls: None,
            },
            token: "t".into(),
        },
        authentication: Authentication::Cluster,
    }
    .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/start",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(serve_tls(listener, app, tls, std::future::pending()));
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (ca_file, crt, key_file) = (path("ca.crt"), path("client.crt"), path("client.key"));
    let (with_cert, forged) = tokio::task::spawn_blocking(move || {
        let common = [
            "--cacert",
            &ca_file,
            "-X",
            "PUT",
            "-H",
            "X-Remote-User: alice",
        ];
        let mut with = common.to_vec();
        with.extend(["--cert", &crt, "--key", &key_file, &url]);
        let mut without = common.to_vec();
        without.push(&url);
        (curl(&with), curl(&without))
    })
    .await
    .unwrap();
    assert_eq!(forged.1, "401", "{}", forged.0);
    // Authenticated as alice: what follows is the cluster's SubjectAccessReview, which this
    // test server does not serve (a real cluster does).
    eprintln!("with the certificate: {} {}", with_cert.1, with_cert.0);
    assert_ne!(with_cert.1, "401", "{}", with_cert.0);
    assert_ne!(
        with_cert.1, "000",
        "the TLS handshake with the client certificate"
    );
}
