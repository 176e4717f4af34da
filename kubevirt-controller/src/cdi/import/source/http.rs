//! An `http`/`https` URL as a source (a DataVolume's `source.http`): HTTP/1.1 over hyper with
//! TLS from rustls, the system's CA roots plus a DataVolume's `certConfigMap`, basic
//! authentication from its `secretRef`, its `extraHeaders`/`secretExtraHeaders`, redirects
//! followed (up to 10, as Go's client), and a transfer that stalls for the idle timeout (10
//! minutes, upstream's) given up; through the cluster's proxy if one is set ([`super::proxy`]).
//!
//! The pipeline is synchronous; the body is read through a small single-threaded tokio runtime
//! that the reader owns, so the connection is driven only while the importer reads.

use super::proxy::{Proxy, ProxyConfig};
use super::{Source, SourceError, Stream};
use base64::Engine;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 10;
/// Upstream's idle timeout: no byte for this long ends the transfer.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the URL.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// User and password for basic authentication (`secretRef`'s `accessKeyId`/`secretKey`).
    pub basic_auth: Option<(String, String)>,
    /// Directories of PEM files with CA certificates to trust besides the system's
    /// (`certConfigMap`, the cluster's proxy CA bundle).
    pub cert_dirs: Vec<PathBuf>,
    /// Headers sent with every request (`extraHeaders`, `secretExtraHeaders`).
    pub extra_headers: Vec<(String, String)>,
    /// Accept any server certificate (`insecureSkipVerify`).
    pub insecure_skip_verify: bool,
    /// The proxies (the cluster's `importProxy`).
    pub proxy: ProxyConfig,
    /// No data for this long fails the import.
    pub idle_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            basic_auth: None,
            cert_dirs: Vec::new(),
            extra_headers: Vec::new(),
            insecure_skip_verify: false,
            proxy: ProxyConfig::default(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Failures of an HTTP source.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The URL does not parse.
    #[error("the URL {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Not `http` or `https`.
    #[error("the URL {url} is not http:// or https://")]
    UnsupportedScheme {
        /// The URL.
        url: String,
    },
    /// An extra header cannot be sent.
    #[error("the extra header {name:?} cannot be sent: {reason}")]
    BadHeader {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A CA directory could not be read.
    #[error("reading CA certificates from {path}: {source}")]
    CertDir {
        /// The directory or file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// TLS could not be set up.
    #[error("setting up TLS: {0}")]
    TlsSetup(String),
    /// TCP or TLS to the server failed.
    #[error("connecting to {url}: {source}{hint}")]
    Connect {
        /// The URL.
        url: String,
        /// The failure.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// HTTP itself failed.
    #[error("HTTP with {url}: {source}")]
    Protocol {
        /// The URL.
        url: String,
        /// The failure.
        #[source]
        source: hyper::Error,
    },
    /// Not 200 OK.
    #[error("HTTP GET {url} answered {status} (expected 200 OK){hint}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// What to do about it.
        hint: &'static str,
        /// The `WWW-Authenticate` challenge of a 401 (a registry's token flow reads it).
        challenge: Option<String>,
    },
    /// A redirect without a usable Location.
    #[error("{url} redirects to {location:?}, which is not a usable URL")]
    BadRedirect {
        /// The URL.
        url: String,
        /// Where it pointed.
        location: String,
    },
    /// Endless redirects.
    #[error("{url} redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects {
        /// The first URL.
        url: String,
    },
    /// The transfer stalled.
    #[error("no data from {url} for {:.1} s; giving up", .timeout.as_secs_f64())]
    Stalled {
        /// The URL.
        url: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The body broke off.
    #[error("reading the body of {url}: {source}")]
    Body {
        /// The URL.
        url: String,
        /// The failure.
        #[source]
        source: hyper::Error,
    },
    /// The runtime could not start.
    #[error("starting the HTTP client: {0}")]
    Runtime(#[source] io::Error),
}

/// An HTTP(S) URL.
#[derive(Debug)]
pub struct HttpSource {
    url: String,
    uri: Uri,
    options: HttpOptions,
}

impl HttpSource {
    /// `url` with `options`; the URL is checked now.
    pub fn new(url: &str, mut options: HttpOptions) -> Result<HttpSource, HttpError> {
        let (uri, credentials) = without_userinfo(parse_url(url)?);
        // `http://user:password@host/...`: basic authentication, as Go's client does it, and
        // the password kept out of every message.
        if options.basic_auth.is_none() {
            options.basic_auth = credentials;
        }
        for (name, value) in &options.extra_headers {
            let bad = |reason: String| HttpError::BadHeader {
                name: name.clone(),
                reason,
            };
            hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| bad(e.to_string()))?;
            hyper::header::HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
        }
        Ok(HttpSource {
            url: uri.to_string(),
            uri,
            options,
        })
    }
}

fn parse_url(url: &str) -> Result<Uri, HttpError> {
    let uri: Uri =
        url.parse()
            .map_err(|e: hyper::http::uri::InvalidUri| HttpError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(uri),
        Some("http") | Some("https") => Err(HttpError::InvalidUrl {
            url: url.to_string(),
            reason: "it names no host".into(),
        }),
        _ => Err(HttpError::UnsupportedScheme {
            url: url.to_string(),
        }),
    }
}

impl Source for HttpSource {
    fn open(&mut self) -> Result<Stream, SourceError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HttpError::Runtime)?;
        let mut tls = None;
        let mut uri = self.uri.clone();
        let mut options = self.options.clone();
        for _ in 0..=MAX_REDIRECTS {
            if uri.scheme_str() == Some("https") && tls.is_none() {
                tls = Some(super::tls::client_config(
                    &self.options.cert_dirs,
                    self.options.insecure_skip_verify,
                )?);
            }
            let response = rt.block_on(get(&uri, &options, tls.as_ref()))?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(hyper::header::LOCATION)
            {
                let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
                uri = resolve(&uri, &location).ok_or_else(|| HttpError::BadRedirect {
                    url: uri.to_string(),
                    location,
                })?;
                // As Go's client: credentials do not follow a redirect to another host (a
                // registry's blob redirected to object storage with its own signature).
                if uri.host() != self.uri.host() {
                    options.basic_auth = None;
                    options.extra_headers.retain(|(name, _)| {
                        !name.eq_ignore_ascii_case("authorization")
                            && !name.eq_ignore_ascii_case("cookie")
                    });
                }
                continue;
            }
            if status != StatusCode::OK {
                let hint = match status.as_u16() {
                    401 | 403 => {
                        "; if the server needs credentials, give the DataVolume a secretRef (accessKeyId, secretKey) or secretExtraHeaders"
                    }
                    404 | 410 => "; check the DataVolume's source.http.url",
                    _ => "",
                };
                let challenge = response
                    .headers()
                    .get(hyper::header::WWW_AUTHENTICATE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                return Err(HttpError::Status {
                    url: uri.to_string(),
                    status,
                    hint,
                    challenge,
                }
                .into());
            }
            let length = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            return Ok(Stream {
                reader: Box::new(BodyReader {
                    rt,
                    body: response.into_body(),
                    chunk: Bytes::new(),
                    url: uri.to_string(),
                    idle_timeout: self.options.idle_timeout,
                }),
                length,
            });
        }
        Err(HttpError::TooManyRedirects {
            url: self.url.clone(),
        }
        .into())
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// `uri` without its `user:password@`, and those (percent-decoded).
fn without_userinfo(uri: Uri) -> (Uri, Option<(String, String)>) {
    let Some((userinfo, host)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) else {
        return (uri, None);
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let credentials = (
        super::proxy::percent_decode(user),
        super::proxy::percent_decode(password),
    );
    let rebuilt = format!(
        "{}://{host}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    match rebuilt.parse() {
        Ok(clean) => (clean, Some(credentials)),
        Err(_) => (uri, Some(credentials)),
    }
}

/// A redirect's `Location` against the URL that answered it.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if let Ok(uri) = parse_url(location) {
        return Some(uri);
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let base_path = base.path();
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{location}")
    };
    format!(
        "{scheme}://{authority}{}",
        if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        }
    )
    .parse()
    .ok()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One GET on a new connection.
async fn get(
    uri: &Uri,
    options: &HttpOptions,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Response<Incoming>, HttpError> {
    let url = uri.to_string();
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or_default();
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let connect_err = |source, hint| HttpError::Connect {
        url: url.clone(),
        source,
        hint,
    };
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "timed out");
    let proxy = options.proxy.for_uri(uri);
    let (to_host, to_port) = proxy.map_or((bare_host, port), |p| (p.host.as_str(), p.port));
    let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((to_host, to_port)))
        .await
        .map_err(|_| connect_err(timed_out(), ""))?
        .map_err(|e| connect_err(e, ""))?;
    let _ = tcp.set_nodelay(true);
    if let Some(proxy) = proxy
        && https
    {
        tokio::time::timeout(CONNECT_TIMEOUT, tunnel(&mut tcp, bare_host, port, proxy))
            .await
            .map_err(|_| connect_err(timed_out(), ""))?
            .map_err(|e| connect_err(e, ""))?;
    }
    let io: Box<dyn Io> = match tls {
        Some(config) if https => {
            let name = rustls::pki_types::ServerName::try_from(bare_host.to_string())
                .map_err(|e| connect_err(io::Error::other(e), ""))?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let hint = "; if the server's certificate comes from a private CA, give the DataVolume a certConfigMap holding that CA";
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| connect_err(timed_out(), ""))?
                .map_err(|e| connect_err(e, hint))?;
            Box::new(stream)
        }
        _ => Box::new(tcp),
    };
    let protocol = |source| HttpError::Protocol {
        url: url.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(protocol)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // Through a proxy, plain HTTP asks for the whole URL.
    let target = match proxy {
        Some(_) if !https => uri.to_string(),
        _ => uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    };
    let mut request = Request::get(target)
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .header(hyper::header::USER_AGENT, "kubevirt-rs-cdi-importer");
    if let Some((user, password)) = &options.basic_auth {
        request = request.header(
            hyper::header::AUTHORIZATION,
            basic(&format!("{user}:{password}")),
        );
    }
    if let Some(credentials) = proxy
        .filter(|_| !https)
        .and_then(|p| p.credentials.as_ref())
    {
        request = request.header(hyper::header::PROXY_AUTHORIZATION, basic(credentials));
    }
    for (name, value) in &options.extra_headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| HttpError::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    sender.send_request(request).await.map_err(protocol)
}

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// Asks `proxy` (connected as `tcp`) for a tunnel to `host:port`.
async fn tunnel(tcp: &mut TcpStream, host: &str, port: u16, proxy: &Proxy) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(credentials) = &proxy.credentials {
        request.push_str(&format!("Proxy-Authorization: {}\r\n", basic(credentials)));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;
    // The answer's head, byte by byte: what follows it is the tunnel's.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 << 10 || tcp.read(&mut byte).await? == 0 {
            return Err(io::Error::other(format!(
                "the proxy {}:{} closed or sent no answer to CONNECT",
                proxy.host, proxy.port
            )));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default().trim().to_string();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(io::Error::other(format!(
            "the proxy {}:{} refused the tunnel: {status}",
            proxy.host, proxy.port
        )));
    }
    Ok(())
}

/// The response body as a blocking reader.
struct BodyReader {
    rt: tokio::runtime::Runtime,
    body: Incoming,
    chunk: Bytes,
    url: String,
    idle_timeout: Duration,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let (body, idle) = (&mut self.body, self.idle_timeout);
            // The timer is made inside the runtime, which it needs.
            let frame = self
                .rt
                .block_on(async move { tokio::time::timeout(idle, body.frame()).await });
            match frame {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        HttpError::Stalled {
                            url: self.url.clone(),
                            timeout: self.idle_timeout,
                        },
                    ));
                }
                Ok(None) => return Ok(0),
                Ok(Some(Err(source))) => {
                    return Err(io::Error::other(HttpError::Body {
                        url: self.url.clone(),
                        source,
                    }));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_up_front() {
        let ok = HttpSource::new("https://example.invalid/a.img", HttpOptions::default());
        assert!(ok.is_ok());
        let e = HttpSource::new("ftp://example.invalid/a", HttpOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the URL ftp://example.invalid/a is not http:// or https://"
        );
        let e = HttpSource::new("http:///nohost", HttpOptions::default()).unwrap_err();
        assert!(matches!(e, HttpError::InvalidUrl { .. }), "{e}");
        let options = HttpOptions {
            extra_headers: vec![("Bad Name".into(), "v".into())],
            ..HttpOptions::default()
        };
        let e = HttpSource::new("http://h/a", options).unwrap_err();
        assert!(e.to_string().contains("\"Bad Name\""), "{e}");
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_leave_the_url() {
        let s =
            HttpSource::new("http://us%40er:p%3Ass@h:81/a.img", HttpOptions::default()).unwrap();
        assert_eq!(s.describe(), "http://h:81/a.img");
        assert_eq!(s.options.basic_auth, Some(("us@er".into(), "p:ss".into())));
        let given = HttpOptions {
            basic_auth: Some(("a".into(), "b".into())),
            ..HttpOptions::default()
        };
        let s = HttpSource::new("http://x:y@h/a", given).unwrap();
        assert_eq!(s.options.basic_auth, Some(("a".into(), "b".into())));
    }

    #[test]
    fn redirects_resolve_against_the_answering_url() {
        let base: Uri = "http://h:8080/images/a.img?x=1".parse().unwrap();
        let r = |l| resolve(&base, l).map(|u| u.to_string());
        assert_eq!(r("https://other/b").as_deref(), Some("https://other/b"));
        assert_eq!(r("/c/d.img").as_deref(), Some("http://h:8080/c/d.img"));
        assert_eq!(r("e.img").as_deref(), Some("http://h:8080/images/e.img"));
    }
}
