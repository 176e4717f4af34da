//! The CDI importer's HTTP source against real servers on 127.0.0.1: credentials, extra
//! headers, redirects, TLS with a DataVolume's CA or none, the cluster's proxy, a stalled
//! transfer, and the progress served while the bytes arrive.

mod cdi;

use cdi::harness::{http, http_with, into_dir, names_in, request};
use cdi::images::{self, MARKER, MIB, marker_at};
use cdi::proxy::ForwardProxy;
use cdi::server::{Server, tls_pair};
use kubevirt_controller::cdi::import::metrics::MetricsServer;
use kubevirt_controller::cdi::import::source::http::HttpOptions;
use kubevirt_controller::cdi::import::source::proxy::{Proxy, ProxyConfig};
use kubevirt_controller::cdi::import::{Progress, Target, import};
use kubevirt_testsupport::tempdir;
use std::io::{Read, Write};

#[test]
fn credentials_headers_and_redirects_reach_the_server() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", 8 * MIB);
    images::convert(&raw, "qcow2", "disk.qcow2");
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    let url = server.url("private/disk.qcow2");
    let (result, _) = into_dir(&claim, http(&url), 64 * MIB);
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("401 Unauthorized") && e.contains("secretRef"),
        "{e}"
    );

    let options = HttpOptions {
        basic_auth: Some(("user".into(), "pw".into())),
        extra_headers: vec![("X-Token".into(), "secret".into())],
        ..HttpOptions::default()
    };
    let (result, _) = into_dir(&claim, http_with(&url, options), 64 * MIB);
    result.unwrap();
    assert_eq!(marker_at(&claim.join("disk.img")), MARKER);

    let claim = tempdir("cdi-claim");
    let (result, _) = into_dir(&claim, http(&server.url("moved/disk.qcow2")), 64 * MIB);
    result.unwrap();
    assert_eq!(marker_at(&claim.join("disk.img")), MARKER);
}

#[test]
fn a_stalled_transfer_is_given_up_after_the_idle_timeout() {
    let served = tempdir("cdi-served");
    images::raw(&served, "raw.img", 4 * MIB);
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    let options = HttpOptions {
        idle_timeout: std::time::Duration::from_millis(300),
        ..HttpOptions::default()
    };
    let started = std::time::Instant::now();
    let (result, _) = into_dir(
        &claim,
        http_with(&server.url("stall/raw.img"), options),
        64 * MIB,
    );
    let e = result.unwrap_err().to_string();
    assert!(e.contains("no data from") && e.contains("for 0.3 s"), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "gave up before the server resumed"
    );
    assert!(names_in(&claim).is_empty());
}

#[test]
fn https_trusts_the_datavolumes_ca() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", 8 * MIB);
    images::gz(&raw);
    let (config, ca_pem) = tls_pair();
    let server = Server::start(served.to_path_buf(), Some(config));
    let url = server.url("files/raw.img.gz");
    let claim = tempdir("cdi-claim");
    let (result, _) = into_dir(&claim, http(&url), 64 * MIB);
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("certConfigMap"),
        "an unknown CA is refused with a hint: {e}"
    );

    let options = HttpOptions {
        insecure_skip_verify: true,
        ..HttpOptions::default()
    };
    let (result, _) = into_dir(&claim, http_with(&url, options), 64 * MIB);
    result.unwrap_or_else(|e| panic!("insecureSkipVerify accepts it: {e}"));

    let certs = tempdir("cdi-certs");
    std::fs::write(certs.join("ca.pem"), ca_pem).unwrap();
    let options = HttpOptions {
        cert_dirs: vec![certs.to_path_buf()],
        ..HttpOptions::default()
    };
    let (result, _) = into_dir(&claim, http_with(&url, options), 64 * MIB);
    result.unwrap();
    assert_eq!(marker_at(&claim.join("disk.img")), MARKER);
}

#[test]
fn the_clusters_proxy_carries_http_and_https() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", 8 * MIB);
    images::gz(&raw);
    let plain = Server::start(served.to_path_buf(), None);
    let (config, ca_pem) = tls_pair();
    let secure = Server::start(served.to_path_buf(), Some(config));
    let (http_proxy, https_proxy) = (
        ForwardProxy::start(plain.addr),
        ForwardProxy::start(secure.addr),
    );
    let certs = tempdir("cdi-certs");
    std::fs::write(certs.join("ca.pem"), ca_pem).unwrap();
    let options = HttpOptions {
        cert_dirs: vec![certs.to_path_buf()],
        proxy: ProxyConfig {
            http: Some(Proxy {
                host: "127.0.0.1".into(),
                port: http_proxy.addr.port(),
                credentials: Some("u:p".into()),
            }),
            https: Some(Proxy {
                host: "127.0.0.1".into(),
                port: https_proxy.addr.port(),
                credentials: None,
            }),
            no_proxy: vec![],
        },
        ..HttpOptions::default()
    };
    // The name resolves nowhere: only the proxies can reach it.
    for url in [
        "http://images.example.invalid/files/raw.img.gz",
        "https://images.example.invalid/files/raw.img.gz",
    ] {
        let claim = tempdir("cdi-claim");
        let (result, _) = into_dir(&claim, http_with(url, options.clone()), 64 * MIB);
        result.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(marker_at(&claim.join("disk.img")), MARKER, "{url}");
    }
    assert_eq!(
        *http_proxy.seen.lock().unwrap(),
        [(
            "GET http://images.example.invalid/files/raw.img.gz".to_string(),
            Some("Basic dTpw".to_string())
        )]
    );
    assert_eq!(
        *https_proxy.seen.lock().unwrap(),
        [("CONNECT images.example.invalid:443".to_string(), None)]
    );
}

#[test]
fn progress_is_served_while_importing() {
    let served = tempdir("cdi-served");
    images::raw(&served, "raw.img", 24 * MIB);
    let server = Server::start(served.to_path_buf(), None);
    let progress = Progress::new();
    let metrics = MetricsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        "dv-uid".into(),
        progress.clone(),
    )
    .unwrap();
    let claim = tempdir("cdi-claim");
    let target = Target::Filesystem {
        dir: claim.to_path_buf(),
    };
    let req = request(
        target,
        http(&server.url("slow/raw.img")),
        64 * MIB,
        &progress,
    );
    let importer = std::thread::spawn(move || import(req).map(|_| ()).map_err(|e| e.to_string()));
    let scrape = || {
        let mut s = std::net::TcpStream::connect(metrics.local_addr()).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("kubevirt_cdi_import_progress_total{ownerUID=\"dv-uid\"}"))
            .unwrap_or_else(|| panic!("no progress line in {text}"))
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
    };
    let mut seen_midway = false;
    while !importer.is_finished() {
        let value = scrape();
        seen_midway |= value > 0.0 && value < 100.0;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    importer.join().unwrap().unwrap();
    assert!(
        seen_midway,
        "a value between 0 and 100 was served during the import"
    );
    assert_eq!(scrape(), 100.0);
}
