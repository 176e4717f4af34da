//! `httpGet` probes over HTTP and HTTPS, as upstream's kubelet makes them: one `GET` with
//! upstream's `User-Agent`, a status from 200 to 399 passes. HTTPS does not verify the
//! container's certificate (upstream's prober sets `InsecureSkipVerify`: a pod's serving
//! certificate is usually not for its IP, nor signed by anything the node trusts); the
//! handshake's signatures are still checked, so the connection is TLS proper.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::check::{Outcome, address, connect};
use crate::tls::AnyCertificate;

/// The longest response head an HTTP probe reads.
const MAX_HEAD: usize = 16 * 1024;

/// An `httpGet` probe's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (the default).
    Http,
    /// HTTP over TLS, the certificate not verified.
    Https,
}

impl Scheme {
    /// `scheme` of the probe (`HTTP`, `HTTPS`, any case; none is HTTP).
    pub fn parse(scheme: Option<&str>) -> Result<Scheme, String> {
        match scheme {
            None => Ok(Scheme::Http),
            Some(s) if s.eq_ignore_ascii_case("HTTP") => Ok(Scheme::Http),
            Some(s) if s.eq_ignore_ascii_case("HTTPS") => Ok(Scheme::Https),
            Some(s) => Err(format!(
                "unsupported scheme {s:?}: an httpGet probe's scheme is HTTP or HTTPS"
            )),
        }
    }

    fn url_prefix(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The HTTP/1.1 request an HTTP probe sends (upstream's `User-Agent` and `Accept` unless the
/// probe sets them).
pub fn request(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> String {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {}\r\n", address(host, port)));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.32\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        // Header names and values from the spec cannot end the head early.
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// The status code of an HTTP response head (`HTTP/1.1 200 OK`).
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..1000).contains(c))
}

/// Sends the request on `s` and reads the status code of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> Result<u16, String> {
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head).ok_or_else(|| "malformed HTTP response".to_string())
}

/// One `httpGet` attempt against `host:port`.
pub async fn http_probe(
    scheme: Scheme,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    limit: Duration,
) -> Outcome {
    let url = format!("{}://{}{path}", scheme.url_prefix(), address(host, port));
    let request = request(host, port, path, headers);
    let attempt = async {
        let s = connect(host, port, limit).await?;
        match scheme {
            Scheme::Http => exchange(s, &request).await,
            Scheme::Https => {
                let name = server_name(host)?;
                let tls = tokio_rustls::TlsConnector::from(tls_config())
                    .connect(name, s)
                    .await
                    .map_err(|e| format!("tls: {e}"))?;
                exchange(tls, &request).await
            }
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Err(_) => Outcome::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(Err(e)) => Outcome::Failure(format!("Get \"{url}\": {e}")),
        Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
        Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// The TLS name of `host`: its IP address (no SNI is sent for one) or its DNS name.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("tls: host {host:?}: {e}"))
}

/// The probes' TLS client configuration (made once): ring's algorithms, any certificate.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyCertificate(provider.clone()));
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(verifier)
                        .with_no_client_auth()
                });
            // ring supports the safe default versions; should that ever change, a
            // configuration with no versions fails each HTTPS probe with its reason.
            Arc::new(config.unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))))
                    .with_no_client_auth()
            }))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_request_carries_upstreams_defaults_unless_the_probe_sets_them() {
        let r = request("10.0.0.5", 80, "/healthz", &[]);
        assert!(
            r.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:80\r\n"),
            "{r}"
        );
        assert!(r.contains("User-Agent: kube-probe/1.32\r\n"));
        let r = request("::1", 80, "/", &[("Host".into(), "example".into())]);
        assert!(
            r.contains("Host: example\r\n") && !r.contains("[::1]"),
            "{r}"
        );
        let r = request("h", 1, "/", &[("X-Evil".into(), "a\r\nInjected: 1".into())]);
        assert!(!r.contains("Injected"), "{r}");
    }

    /// A server on 127.0.0.1 answering each connection with the next of `replies` (then the
    /// last), over TLS with a self-signed certificate for another name when `tls`.
    async fn server(tls: bool, replies: Vec<&'static [u8]>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls.then(|| {
            let cert =
                rcgen::generate_simple_self_signed(vec!["not-this-pod.example".into()]).unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((s, _)) = listener.accept().await {
                let reply = replies[n.min(replies.len() - 1)];
                n += 1;
                async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, reply: &[u8]) {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(reply).await;
                    let _ = s.shutdown().await;
                }
                match &acceptor {
                    Some(a) => {
                        if let Ok(t) = a.accept(s).await {
                            answer(t, reply).await
                        }
                    }
                    None => answer(s, reply).await,
                }
            }
        });
        port
    }

    #[tokio::test]
    async fn http_and_https_probes_pass_and_fail_as_upstreams() {
        let second = Duration::from_secs(1);
        let ok: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        let bad: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        for (scheme, tls) in [(Scheme::Http, false), (Scheme::Https, true)] {
            let port = server(tls, vec![ok, bad]).await;
            let probe = || http_probe(scheme, "127.0.0.1", port, "/", &[], second);
            assert_eq!(probe().await, Outcome::Success, "{scheme:?}");
            assert_eq!(
                probe().await,
                Outcome::Failure("HTTP probe failed with statuscode: 503".into()),
                "{scheme:?}"
            );
        }
        // HTTPS against a plain HTTP server fails the handshake, named as TLS.
        let port = server(false, vec![ok]).await;
        let Outcome::Failure(why) =
            http_probe(Scheme::Https, "127.0.0.1", port, "/", &[], second).await
        else {
            panic!("HTTPS to a plain server passed");
        };
        assert!(
            why.starts_with(&format!("Get \"https://127.0.0.1:{port}/\": tls: ")),
            "{why}"
        );
    }

    #[test]
    fn schemes_parse_as_upstreams_and_others_are_named() {
        assert_eq!(Scheme::parse(None), Ok(Scheme::Http));
        assert_eq!(Scheme::parse(Some("http")), Ok(Scheme::Http));
        assert_eq!(Scheme::parse(Some("HTTPS")), Ok(Scheme::Https));
        assert!(Scheme::parse(Some("ftp")).unwrap_err().contains("\"ftp\""));
    }

    proptest! {
        /// Whatever a container answers, the status line parser never panics and only takes
        /// three-digit codes.
        #[test]
        fn any_response_head_parses_safely(head in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(code) = status_code(&head) {
                prop_assert!((100..1000).contains(&code));
            }
        }
    }
}
