//! The registry source against a real local HTTP server speaking the distribution API (with
//! the token flow), serving images built here.

use super::*;
use base64::Engine;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const USER: &str = "reg-user";
const PASSWORD: &str = "reg-pass";
const TOKEN: &str = "the-token";

/// Paths (without `/v2/`) → bodies; with `auth`, everything but the realm wants the token.
#[derive(Default)]
struct Content {
    blobs: BTreeMap<String, Vec<u8>>,
    auth: bool,
    requests: Vec<String>,
    /// Blobs are redirected to this base URL (object storage).
    redirect_blobs: Option<String>,
    /// Any Authorization header is refused (400, as S3 answers a second auth mechanism).
    refuse_auth: bool,
}

fn serve(content: Arc<Mutex<Content>>) -> String {
    serve_on("127.0.0.1", content)
}

fn serve_on(ip: &str, content: Arc<Mutex<Content>>) -> String {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let realm = format!("http://{address}/token");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                headers.push(h.trim().to_string());
            }
            let auth = headers
                .iter()
                .find_map(|h| {
                    h.strip_prefix("authorization: ")
                        .or(h.strip_prefix("Authorization: "))
                })
                .unwrap_or("")
                .to_string();
            let mut c = content.lock().unwrap();
            c.requests.push(path.clone());
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            );
            let blob = path.contains("/blobs/");
            let (status, extra, body): (&str, String, Vec<u8>) = if c.refuse_auth
                && !auth.is_empty()
            {
                (
                    "400 Bad Request",
                    String::new(),
                    b"one auth mechanism only".to_vec(),
                )
            } else if path.starts_with("/token") {
                if auth == basic && path.contains("scope=repository%3A") {
                    (
                        "200 OK",
                        String::new(),
                        format!("{{\"token\":\"{TOKEN}\"}}").into_bytes(),
                    )
                } else {
                    ("401 Unauthorized", String::new(), b"{}".to_vec())
                }
            } else if c.auth && auth != format!("Bearer {TOKEN}") {
                let repo = path
                    .trim_start_matches("/v2/")
                    .split("/manifests/")
                    .next()
                    .unwrap_or("");
                let challenge = format!(
                    "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:{repo}:pull\"\r\n"
                );
                ("401 Unauthorized", challenge, b"{}".to_vec())
            } else if let Some(base) = c.redirect_blobs.as_ref().filter(|_| blob) {
                (
                    "307 Temporary Redirect",
                    format!("Location: {base}{path}\r\n"),
                    Vec::new(),
                )
            } else {
                match c.blobs.get(path.trim_start_matches("/v2/")) {
                    Some(b) => ("200 OK", String::new(), b.clone()),
                    None => ("404 Not Found", String::new(), b"{}".to_vec()),
                }
            };
            drop(c);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    address
}

fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Puts an image of `layers` under `repo:tag` (behind a Docker manifest list when `index`).
fn put_image(c: &mut Content, repo: &str, tag: &str, layers: &[Vec<u8>], index: bool) -> String {
    let config = b"{}".to_vec();
    let config_digest = kubevirt_oci::digest_of(&config);
    c.blobs
        .insert(format!("{repo}/blobs/{config_digest}"), config);
    let mut entries = Vec::new();
    for l in layers {
        let d = kubevirt_oci::digest_of(l);
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{d}","size":{}}}"#,
            l.len()
        ));
        c.blobs.insert(format!("{repo}/blobs/{d}"), l.clone());
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{config_digest}","size":2}},"layers":[{}]}}"#,
        entries.join(",")
    )
    .into_bytes();
    let md = kubevirt_oci::digest_of(&manifest);
    c.blobs
        .insert(format!("{repo}/manifests/{md}"), manifest.clone());
    if index {
        let other = format!("sha256:{}", "0".repeat(64));
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
            {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{other}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{md}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            manifest.len()
        );
        c.blobs
            .insert(format!("{repo}/manifests/{tag}"), list.into_bytes());
    } else {
        c.blobs.insert(format!("{repo}/manifests/{tag}"), manifest);
    }
    md
}

fn options(dir: &Path, credentials: bool) -> RegistryOptions {
    RegistryOptions {
        credentials: credentials.then(|| (USER.to_string(), PASSWORD.to_string())),
        insecure: true,
        scratch_dir: dir.to_path_buf(),
        ..RegistryOptions::default()
    }
}

fn read_all(source: &mut RegistrySource) -> Result<Vec<u8>, SourceError> {
    let mut out = Vec::new();
    source.open()?.reader.read_to_end(&mut out).unwrap();
    Ok(out)
}

#[test]
fn an_index_is_followed_to_amd64_and_the_top_layers_disk_wins() {
    let dir = kubevirt_testsupport::tempdir("regsrc");
    let content = Arc::new(Mutex::new(Content::default()));
    let address = serve(content.clone());
    let lower = gzip(&tar(&[("disk/disk.img", b"lower layer's disk")]));
    let upper = tar(&[("disk/disk.img", b"upper layer's disk"), ("etc/x", b"x")]);
    let md = put_image(
        &mut content.lock().unwrap(),
        "disks/demo",
        "v1",
        &[lower, upper],
        true,
    );
    let mut s = RegistrySource::new(
        &format!("docker://{address}/disks/demo:v1"),
        options(&dir, false),
    )
    .unwrap();
    assert_eq!(read_all(&mut s).unwrap(), b"upper layer's disk");
    let pulled = s.local_path().unwrap().to_path_buf();
    assert!(pulled.starts_with(&dir));
    drop(s);
    assert!(!pulled.exists(), "the copied disk goes with the source");
    // By digest too.
    let mut s = RegistrySource::new(
        &format!("docker://{address}/disks/demo@{md}"),
        options(&dir, false),
    )
    .unwrap();
    assert_eq!(read_all(&mut s).unwrap(), b"upper layer's disk");
}

#[test]
fn a_blob_that_is_not_its_digest_is_refused() {
    let dir = kubevirt_testsupport::tempdir("regsrc");
    let content = Arc::new(Mutex::new(Content::default()));
    let address = serve(content.clone());
    let layer = gzip(&tar(&[("disk/disk.img", &[1u8; 5000])]));
    {
        let mut c = content.lock().unwrap();
        put_image(
            &mut c,
            "disks/bad",
            "v1",
            std::slice::from_ref(&layer),
            false,
        );
        let key = format!("disks/bad/blobs/{}", kubevirt_oci::digest_of(&layer));
        let mut tampered = layer.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x55;
        c.blobs.insert(key, tampered);
    }
    let mut s = RegistrySource::new(
        &format!("docker://{address}/disks/bad:v1"),
        options(&dir, false),
    )
    .unwrap();
    let e = read_all(&mut s).unwrap_err().to_string();
    assert!(e.contains("has digest") || e.contains("layer"), "{e}");
    assert!(s.local_path().is_none());
}

#[test]
fn the_token_flow_uses_the_credentials_and_bad_ones_are_named() {
    let dir = kubevirt_testsupport::tempdir("regsrc");
    let content = Arc::new(Mutex::new(Content {
        auth: true,
        ..Content::default()
    }));
    let address = serve(content.clone());
    let layer = tar(&[("disk/x.qcow2", b"qcow2 bytes")]);
    put_image(
        &mut content.lock().unwrap(),
        "private/disk",
        "v1",
        &[layer],
        false,
    );
    let url = format!("docker://{address}/private/disk:v1");
    let mut s = RegistrySource::new(&url, options(&dir, true)).unwrap();
    assert_eq!(read_all(&mut s).unwrap(), b"qcow2 bytes");
    let requests = content.lock().unwrap().requests.clone();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("/token?service=test&scope=repository%3Aprivate%2Fdisk%3Apull")),
        "{requests:?}"
    );
    // Without credentials, or with wrong ones: 401, and the message says what to do.
    for credentials in [None, Some(("reg-user".to_string(), "wrong".to_string()))] {
        let mut o = options(&dir, false);
        o.credentials = credentials;
        let mut s = RegistrySource::new(&url, o).unwrap();
        let e = read_all(&mut s).unwrap_err().to_string();
        assert!(e.contains("HTTP 401") && e.contains("secretRef"), "{e}");
    }
}

#[test]
fn credentials_do_not_follow_a_blob_redirected_to_another_host() {
    let dir = kubevirt_testsupport::tempdir("regsrc");
    let storage = Arc::new(Mutex::new(Content {
        refuse_auth: true,
        ..Content::default()
    }));
    let storage_address = serve_on("127.0.0.2", storage.clone());
    let content = Arc::new(Mutex::new(Content {
        auth: true,
        redirect_blobs: Some(format!("http://{storage_address}")),
        ..Content::default()
    }));
    let address = serve(content.clone());
    let layer = tar(&[("disk/disk.img", b"from object storage")]);
    put_image(
        &mut content.lock().unwrap(),
        "private/disk",
        "v1",
        std::slice::from_ref(&layer),
        false,
    );
    put_image(
        &mut storage.lock().unwrap(),
        "private/disk",
        "v1",
        &[layer],
        false,
    );
    let mut s = RegistrySource::new(
        &format!("docker://{address}/private/disk:v1"),
        options(&dir, true),
    )
    .unwrap();
    assert_eq!(read_all(&mut s).unwrap(), b"from object storage");
    let fetched = storage.lock().unwrap().requests.clone();
    assert!(fetched.iter().any(|r| r.contains("/blobs/")), "{fetched:?}");
}

#[test]
fn a_missing_image_or_disk_is_named() {
    let dir = kubevirt_testsupport::tempdir("regsrc");
    let content = Arc::new(Mutex::new(Content::default()));
    let address = serve(content.clone());
    let layer = tar(&[("etc/hostname", b"no disk here")]);
    put_image(
        &mut content.lock().unwrap(),
        "disks/nodisk",
        "v1",
        &[layer],
        false,
    );
    let mut s = RegistrySource::new(
        &format!("docker://{address}/disks/missing:v1"),
        options(&dir, false),
    )
    .unwrap();
    let e = read_all(&mut s).unwrap_err().to_string();
    assert!(e.contains("not found") && e.contains("404"), "{e}");
    let mut s = RegistrySource::new(
        &format!("docker://{address}/disks/nodisk:v1"),
        options(&dir, false),
    )
    .unwrap();
    let e = read_all(&mut s).unwrap_err().to_string();
    assert!(e.contains("has no disk"), "{e}");
    // A registry without TLS is not spoken to over plain HTTP unless it is insecure.
    let mut o = options(&dir, false);
    o.insecure = false;
    let mut s = RegistrySource::new(&format!("docker://{address}/disks/nodisk:v1"), o).unwrap();
    let e = read_all(&mut s).unwrap_err().to_string();
    assert!(e.contains("connecting to https://"), "{e}");
}

#[test]
fn urls_are_checked() {
    let dir = kubevirt_testsupport::tempdir("regsrc");
    for bad in [
        "http://x/y",
        "docker://",
        "docker://Upper/Case",
        "oci-archive:/x.tar",
    ] {
        let e = RegistrySource::new(bad, options(&dir, false)).unwrap_err();
        assert!(e.to_string().contains("registry URL"), "{bad}: {e}");
    }
    let s = RegistrySource::new(
        "docker://quay.io/containerdisks/fedora:41",
        options(&dir, false),
    )
    .unwrap();
    assert_eq!(s.image().registry, "quay.io");
    assert_eq!(s.describe(), "docker://quay.io/containerdisks/fedora:41");
}

use proptest::prelude::*;

proptest! {
    #[test]
    fn any_url_is_accepted_or_refused_without_panicking(url in "(docker://)?\\PC{0,60}") {
        let _ = RegistrySource::new(&url, RegistryOptions::default());
    }

    #[test]
    fn query_escaping_keeps_unreserved_and_escapes_the_rest(v in "\\PC{0,30}") {
        let e = query_escape(&v);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
    }
}
