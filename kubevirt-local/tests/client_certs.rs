//! Users from client certificates (`kubevirt-local kubeconfig --client-certificate`), with the
//! real kubectl against a real `kubevirt-local apiserver`: `kubectl auth whoami` shows the
//! certificate's CN and O values, `kubectl auth can-i` and reads answer per RBAC for that user
//! (not another namespace's VMs); certificates of another CA, the front proxy's and expired ones
//! are no one (401); the client CA is neither the serving CA nor the front proxy's.

mod common;

use base64::Engine;
use common::users::{as_user, can_i, stderr, stdout, user_kubeconfig};
use common::{Server, crds_file, fixture};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A kubeconfig of `s`'s cluster whose user is the certificate and key (PEM) given.
fn with_certificate(s: &Server, cert: &str, key: &str) -> PathBuf {
    let mut kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let auth = kc.auth_infos[0].auth_info.as_mut().expect("user");
    auth.token = None;
    auth.client_certificate_data = Some(b64(cert));
    auth.client_key_data = Some(b64(key).into());
    let dir = s
        .dir
        .join(format!("cert-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).expect("json")).expect("write");
    path
}

/// The certificate and key (PEM) of a kubeconfig written by `kubeconfig --client-certificate`.
fn certificate_of(kubeconfig: &Path) -> (String, String) {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let auth = kc.auth_infos[0].auth_info.clone().expect("user");
    assert!(auth.token.is_none(), "a certificate user carries no token");
    let text = |b: &str| {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
    };
    use secrecy::ExposeSecret;
    (
        text(
            &auth
                .client_certificate_data
                .expect("client-certificate-data"),
        ),
        text(
            auth.client_key_data
                .expect("client-key-data")
                .expose_secret(),
        ),
    )
}

/// kube-rs (whose rustls client sends its certificate whatever CAs the server hints, unlike
/// Go's) as `kubeconfig`: the status code of `GET /version`, or 200.
fn kube_rs_status(kubeconfig: &Path) -> u16 {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        let client = kube::Client::try_from(config).expect("client");
        match client.apiserver_version().await {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("GET /version: {e}"),
        }
    })
}

fn unauthorized(out: &Output) {
    assert!(!out.status.success(), "{}", stdout(out));
    // kubectl's discovery words a 401 as "the server has asked for the client to provide
    // credentials".
    assert!(
        stderr(out).contains("You must be logged in to the server"),
        "{}",
        stderr(out)
    );
}

#[test]
fn a_client_certificate_is_its_cn_in_its_o_groups_per_rbac() {
    let s = Server::start("x509-users");
    s.ok(&["apply", "-f", crds_file(&s.dir).to_str().unwrap()]);
    for ns in ["team-a", "team-b"] {
        s.ok(&["create", "namespace", ns]);
        s.ok(&[
            "-n",
            ns,
            "apply",
            "-f",
            &fixture("kubevirt-examples-vm-cirros.yaml"),
        ]);
    }
    // The group (an O of the certificate) may read team-a's VMs.
    s.ok(&[
        "-n",
        "team-a",
        "create",
        "role",
        "vm-reader",
        "--verb=get,list,watch",
        "--resource=virtualmachines.kubevirt.io",
    ]);
    s.ok(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "devs-read",
        "--role=vm-reader",
        "--group=devs",
    ]);
    let dana = user_kubeconfig(&s.dir, "dana", &["devs", "qa"], &["--client-certificate"]);
    let (cert, _key) = certificate_of(&dana);
    let who = stdout(&as_user(
        &dana,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    ));
    assert_eq!(who, r#"dana ["devs","qa","system:authenticated"]"#);
    assert!(can_i(&dana, &["list", "virtualmachines", "-n", "team-a"]));
    assert!(!can_i(&dana, &["list", "virtualmachines", "-n", "team-b"]));
    assert!(!can_i(&dana, &["delete", "vm/vm-cirros", "-n", "team-a"]));
    let listed = stdout(&as_user(
        &dana,
        &["get", "vms", "-n", "team-a", "-o", "name"],
    ));
    assert_eq!(listed, "virtualmachine.kubevirt.io/vm-cirros");
    let denied = as_user(&dana, &["get", "vm", "vm-cirros", "-n", "team-b"]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains(
            r#"virtualmachines.kubevirt.io "vm-cirros" is forbidden: User "dana" cannot get resource "virtualmachines" in API group "kubevirt.io" in the namespace "team-b""#
        ),
        "{}",
        stderr(&denied)
    );
    assert_eq!(kube_rs_status(&dana), 200, "kube-rs with the certificate");

    // A certificate another data directory's client CA issued, for the same name and
    // system:masters, is no one here: kubectl does not even offer it (the server hints its
    // own CA), kube-rs does and gets a 401.
    let other = Server::start("x509-other");
    let forged = user_kubeconfig(
        &other.dir,
        "dana",
        &["system:masters"],
        &["--client-certificate"],
    );
    let (fcert, fkey) = certificate_of(&forged);
    drop(other);
    let forged = with_certificate(&s, &fcert, &fkey);
    unauthorized(&as_user(&forged, &["get", "vms", "-n", "team-b"]));
    assert_eq!(kube_rs_status(&forged), 401);

    // The aggregator's front-proxy client certificate (the requestheader CA) is no user here.
    let front = with_certificate(
        &s,
        &std::fs::read_to_string(s.dir.join("front-proxy-client.crt")).unwrap(),
        &std::fs::read_to_string(s.dir.join("front-proxy-client.key")).unwrap(),
    );
    unauthorized(&as_user(&front, &["get", "namespaces"]));
    assert_eq!(kube_rs_status(&front), 401);

    // The other way round: a user's certificate does not chain to the front proxy's CA (what
    // aggregated servers trust X-Remote-* headers from), nor to the serving CA; only to the
    // client CA, which the extension-apiserver-authentication ConfigMap publishes.
    let verifies_against = |ca_file: &str| {
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read_to_string(s.dir.join(ca_file)).unwrap();
        for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        let leaf = rustls_pemfile::certs(&mut cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        v.verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now())
            .is_ok()
    };
    assert!(verifies_against("client-ca.crt"));
    assert!(!verifies_against("front-proxy-ca.crt"));
    assert!(!verifies_against("ca.crt"));
    let published = s.ok(&[
        "get",
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
        "-o",
        "jsonpath={.data.client-ca-file}",
    ]);
    assert_eq!(
        published,
        std::fs::read_to_string(s.dir.join("client-ca.crt")).unwrap()
    );

    // An expired certificate is no one either.
    let brief = user_kubeconfig(
        &s.dir,
        "dana",
        &["devs"],
        &["--client-certificate", "--expiration-seconds", "1"],
    );
    assert!(can_i(&brief, &["list", "virtualmachines", "-n", "team-a"]));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    unauthorized(&as_user(&brief, &["get", "vms", "-n", "team-a"]));
}
